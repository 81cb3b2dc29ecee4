"""Quote-ledger records cannot be rewritten unseen (issue 10, "What breaks" 5).

A real ledger is written by the real writer, sealed with the registry's signing key, then altered
as someone with file access (but not the key) would: each alteration is named by
``ratekeeper ledger verify`` (exit 1) and ``replay`` refuses to call an affected quote identical.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tests.http_helpers import MODEL, make_registry, policies
from tests.test_ledger import SIGNATURE, policy

import ratekeeper
from ratekeeper.cli.main import main
from ratekeeper.engine.ids import new_quote_id
from ratekeeper.engine.ledger import (
    LedgerConfig,
    QuoteLedger,
    close_orphaned_segments,
    recording,
)
from ratekeeper.engine.ledger_chain import PURPOSE, canonical, entry_hash, file_sha256
from ratekeeper.engine.ledger_verify import verify_ledger
from ratekeeper.governance.signing import SigningKey

SEGMENTS, ROWS = 3, 4  # one writer, one chain: three sealed segments of four quotes each


def registry_at(folder: Path) -> Any:
    """The one place this file makes its (open) registry: a GLM champion, and its key."""
    return make_registry(folder)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[list[str]]]:
    """(registry folder, pristine ledger, quote ids per segment, oldest first)."""
    base = tmp_path_factory.mktemp("ledger_records")
    registry, book = registry_at(base / "registry")
    scorer = registry.load_model(f"models:/{MODEL}/1")
    ledger = base / "ledger"
    config = LedgerConfig(ledger, flush_interval=0.02, segment_rows=ROWS, key=registry.signing_key)
    ids: list[list[str]] = []
    with recording(config) as writer:
        for segment in range(SEGMENTS):
            ids.append([])
            for body in policies(book, ROWS):
                quote_id = new_quote_id()
                price = scorer.predict_one(body)
                writer.record(
                    quote_id, MODEL, 1, scorer.signature, "quote", "Production", body, price
                )
                ids[-1].append(quote_id)
            deadline = time.monotonic() + 10  # the writer thread rotates past ROWS rows
            while len(sealed_segments(ledger)) <= segment and time.monotonic() < deadline:
                time.sleep(0.01)
    registry.close()
    assert len(sealed_segments(ledger)) == SEGMENTS
    return base / "registry", ledger, ids


def sealed_segments(ledger: Path) -> list[Path]:
    return sorted(ledger.glob(f"{MODEL}/v1/*/*.parquet"))


def chain_file(ledger: Path) -> Path:
    (chain,) = ledger.glob(f"{MODEL}/_chain/*.jsonl")
    return chain


def copy(written: tuple[Path, Path, list[list[str]]], tmp_path: Path) -> Path:
    target = tmp_path / "ledger"
    shutil.copytree(written[1], target)
    return target


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """The real ``ratekeeper`` command, in this process: (exit code, stdout + stderr)."""
    with pytest.raises(SystemExit, match=r"^\d+$") as exited:
        main(list(argv))
    captured = capsys.readouterr()
    return int(str(exited.value.code)), captured.out + captured.err


def verify(capsys: pytest.CaptureFixture[str], registry: Path, ledger: Path) -> tuple[int, str]:
    return cli(capsys, "--registry", str(registry), "ledger", "verify", "--ledger", str(ledger))


def replay(
    capsys: pytest.CaptureFixture[str], registry: Path, ledger: Path, quote_id: str
) -> tuple[int, str]:
    return cli(capsys, "--registry", str(registry), "replay", quote_id, "--ledger", str(ledger))


def relative(ledger: Path, path: Path) -> str:
    return path.relative_to(ledger).as_posix()


def rewrite(path: Path, table: pa.Table) -> None:
    pq.write_table(table, path, compression="zstd")


def test_the_intact_ledger_verifies_and_replays_identical(written, tmp_path, capsys) -> None:
    registry, _, ids = written
    ledger = copy(written, tmp_path)
    code, out = verify(capsys, registry, ledger)
    assert code == 0, out
    assert out.strip() == (
        f"ledger intact: {SEGMENTS} sealed segments, {SEGMENTS * ROWS} rows, 1 chain; seals checked"
    )
    code, out = replay(capsys, registry, ledger, ids[1][2])
    assert code == 0, out
    assert "identical" in out and "verified: hash, rows and chain intact, seals checked" in out
    since = cli(
        capsys, "--registry", str(registry), "ledger", "verify", "--ledger", str(ledger),
        "--since", "1d", "--model", MODEL,
    )  # fmt: skip
    assert since[0] == 0 and f"{SEGMENTS} sealed segments" in since[1]


def test_a_deleted_row_is_named(written, tmp_path, capsys) -> None:
    registry, _, ids = written
    ledger = copy(written, tmp_path)
    segment = sealed_segments(ledger)[1]
    table = pq.read_table(segment)
    rewrite(segment, table.filter(pa.array([i != 1 for i in range(table.num_rows)])))
    code, out = verify(capsys, registry, ledger)
    assert code == 1
    assert out.strip() == (
        f"segment {relative(ledger, segment)}: holds {ROWS - 1} rows, the chain sealed {ROWS}: "
        "rows were deleted or added"
    )
    code, out = replay(capsys, registry, ledger, ids[1][0])  # a row left untouched
    assert code == 1 and "NOT VERIFIED" in out and "identical" not in out


@pytest.mark.parametrize("change", ["edit a prediction", "reorder the rows"])
def test_an_edited_or_reordered_row_is_named(written, tmp_path, capsys, change) -> None:
    registry, _, ids = written
    ledger = copy(written, tmp_path)
    segment = sealed_segments(ledger)[1]
    table = pq.read_table(segment)
    if change == "edit a prediction":
        prediction = table.column("prediction").to_pylist()
        prediction[0] *= 0.9
        index = table.schema.get_field_index("prediction")
        table = table.set_column(index, "prediction", pa.array(prediction, pa.float64()))
    else:
        table = table.take(list(reversed(range(table.num_rows))))
    rewrite(segment, table)
    code, out = verify(capsys, registry, ledger)
    assert code == 1
    assert out.startswith(f"segment {relative(ledger, segment)}: its SHA-256 differs")
    assert "a row was edited or the rows reordered" in out
    code, out = replay(capsys, registry, ledger, ids[1][2])  # its price was not touched
    assert code == 1 and "NOT VERIFIED" in out and "identical" not in out


def test_a_deleted_segment_is_named(written, tmp_path, capsys) -> None:
    registry, _, ids = written
    ledger = copy(written, tmp_path)
    segment = sealed_segments(ledger)[1]
    segment.unlink()
    code, out = verify(capsys, registry, ledger)
    assert code == 1
    assert out.strip() == (
        f"segment {relative(ledger, segment)}: missing: the chain sealed it with {ROWS} rows"
    )
    code, out = replay(capsys, registry, ledger, ids[1][0])
    assert code == 3 and "not in the ledger" in out


@pytest.mark.parametrize("suffix", [".parquet", ".arrows"])
def test_a_forged_segment_is_named(written, tmp_path, capsys, suffix) -> None:
    """A segment slipped in, sealed (Parquet) or made to look still open (a stream file)."""
    registry = written[0]
    ledger = copy(written, tmp_path)
    genuine = sealed_segments(ledger)[0]
    table = pq.read_table(genuine).slice(0, 1)
    forged_id = new_quote_id()
    table = table.set_column(0, "quote_id", pa.array([forged_id], pa.string()))
    forged = genuine.with_name(f"{genuine.stem.split('-')[0]}9-otherhost-4242{suffix}")
    if suffix == ".parquet":
        rewrite(forged, table)
    else:
        with pa.OSFile(str(forged), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as out:
            out.write_table(table)
    code, out = verify(capsys, registry, ledger)
    assert code == 1
    assert out.strip() == (
        f"segment {relative(ledger, forged)}: no chain records this segment "
        "(slipped in, or written outside the ledger)"
    )
    code, out = replay(capsys, registry, ledger, forged_id)
    assert code == 1 and "NOT VERIFIED" in out and "identical" not in out


def rechain(chain: Path, edit: Any, key: SigningKey | None = None) -> None:
    """Apply ``edit`` to the entries and re-link every hash, re-sealing with ``key`` if given."""
    entries = [json.loads(line) for line in chain.read_text().splitlines()]
    entries = edit(entries)
    prev = ""
    lines = []
    for n, entry in enumerate(entries):
        body = {k: v for k, v in entry.items() if k != "seal"}
        body.update(n=n, prev=prev)
        seal = key.seal(PURPOSE, canonical(body)) if key is not None else entry.get("seal")
        lines.append(canonical({**body, "seal": seal}))
        prev = entry_hash(body)
    chain.write_text("".join(line + "\n" for line in lines))


@pytest.mark.parametrize("forger", ["the old seals", "no seals", "a key of its own"])
def test_a_chain_edited_and_rechained_without_the_key_is_named(
    written, tmp_path, capsys, forger
) -> None:
    """A row edited, then its chain entry given the new hash and the chain re-linked."""
    registry, _, ids = written
    ledger = copy(written, tmp_path)
    segment = sealed_segments(ledger)[1]
    table = pq.read_table(segment)
    rewrite(segment, table.take(list(reversed(range(table.num_rows)))))
    name = relative(ledger, segment)

    def new_hash(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for entry in entries:
            if entry.get("segment") == name and entry["kind"] == "sealed":
                entry["sha256"] = file_sha256(segment)
            if forger == "no seals":
                entry["seal"] = None
        return entries

    own_key = SigningKey(b"the forger's own key") if forger == "a key of its own" else None
    rechain(chain_file(ledger), new_hash, own_key)
    code, out = verify(capsys, registry, ledger)
    assert code == 1
    # The first entry whose seal fails: the edited one, or the first of all when all re-sealed.
    first = name if forger == "the old seals" else relative(ledger, sealed_segments(ledger)[0])
    assert out.startswith(f"segment {first}: chain ")
    if forger == "no seals":
        assert "is not sealed (written without the signing key, or its seal removed)" in out
    else:
        assert "its seal does not match (edited, or re-chained without the key)" in out
    code, out = replay(capsys, registry, ledger, ids[1][0])
    assert code == 1 and "NOT VERIFIED" in out and "identical" not in out


def test_a_truncated_chain_tail_is_named(written, tmp_path, capsys) -> None:
    """The last segment deleted with its chain entries and the chain's closing entry."""
    registry, _, ids = written
    ledger = copy(written, tmp_path)
    *kept, last = sealed_segments(ledger)
    last.unlink()
    gone = relative(ledger, last)
    rechain(
        chain_file(ledger),
        lambda entries: [e for e in entries if e.get("segment") != gone and e["kind"] != "closed"],
    )
    code, out = verify(capsys, registry, ledger)
    assert code == 1
    assert out.startswith(f"segment {relative(ledger, kept[-1])}: chain ")
    assert "stops after this segment without its closing entry" in out
    code, out = replay(capsys, registry, ledger, ids[1][0])
    assert code == 1 and "NOT VERIFIED" in out and "identical" not in out
    # Only the closing entry removed: its seal covered the counts, so re-linking does not help.
    ledger = tmp_path / "closing"
    shutil.copytree(written[1], ledger)
    sealed_segments(ledger)[-1].unlink()
    code, out = verify(capsys, registry, ledger)
    assert code == 1 and "missing: the chain sealed it" in out


def test_without_the_key_hashes_and_links_are_checked_and_the_seals_said_unchecked(
    written, tmp_path
) -> None:
    _, pristine, _ = written
    result = verify_ledger(pristine, None)
    assert result.intact and not result.seals_checked
    assert result.summary().endswith("; seals NOT checked (no signing key)")
    ledger = copy(written, tmp_path)
    sealed_segments(ledger)[0].unlink()
    result = verify_ledger(ledger, None)
    assert [f.reason for f in result.failures] == [f"missing: the chain sealed it with {ROWS} rows"]


def test_a_ledger_written_without_a_key_chains_hashes_only(tmp_path) -> None:
    key = SigningKey(b"k" * 32)
    with recording(LedgerConfig(tmp_path)) as ledger:
        ledger.record(new_quote_id(), "m", 1, SIGNATURE, "quote", "Production", policy(0), 1.0)
    assert verify_ledger(tmp_path, None).summary() == (
        "ledger intact: 1 sealed segment, 1 rows, 1 chain; seals NOT checked (no signing key)"
    )
    # Verified with a key, a chain without seals is refused: stripping seals must not pass.
    sealed = verify_ledger(tmp_path, key)
    assert not sealed.intact and "is not sealed" in sealed.failures[0].reason


CRASHING_WRITER = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    from ratekeeper.engine.ids import new_quote_id
    from ratekeeper.engine.ledger import LedgerConfig, QuoteLedger
    from ratekeeper.governance.signing import parse_key
    from tests.test_ledger import SIGNATURE, policy

    config = LedgerConfig(Path(sys.argv[1]), flush_interval=0.05, key=parse_key(sys.argv[2]))
    ledger = QuoteLedger(config)
    ledger.start()
    for i in range(20):
        ledger.record(new_quote_id(), "m", 1, SIGNATURE, "quote", "Production", policy(i), i)
    while ledger.written < 20:
        time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_segments_a_crash_left_open_enter_the_chain_and_planted_ones_do_not(tmp_path) -> None:
    key = SigningKey(b"s" * 32)
    crashed = subprocess.run(
        [sys.executable, "-c", CRASHING_WRITER, str(tmp_path), key.secret.hex()],
        cwd=Path(__file__).parents[2],
        capture_output=True,
        timeout=60,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()
    (left_open,) = tmp_path.rglob("*.arrows")
    dead = verify_ledger(tmp_path, key)  # its chain has no end, and its writer is gone
    assert "without its closing entry" in dead.failures[0].reason
    # Someone plants a stream file named like the dead writer's, hoping the recovery chains it.
    stamp, host, pid = left_open.stem.rsplit("-", 2)
    planted = left_open.with_name(f"{stamp}1-{host}-{pid}.arrows")
    shutil.copyfile(left_open, planted)
    assert close_orphaned_segments(tmp_path, key) == 1  # the one its chain announced
    result = verify_ledger(tmp_path, key)
    assert [(f.segment, f.reason) for f in result.failures] == [
        (
            relative(tmp_path, planted),
            "no chain records this segment (slipped in, or written outside the ledger)",
        )
    ]
    planted.unlink()
    result = verify_ledger(tmp_path, key)
    assert result.intact and (result.segments, result.rows) == (1, 20)
    chain = [json.loads(line) for line in chain_file_of(tmp_path, "m").read_text().splitlines()]
    assert [e["kind"] for e in chain] == ["opened", "sealed", "closed"]
    assert chain[-1]["recovered"] is True and chain[-1]["rows"] == 20


def chain_file_of(ledger: Path, model: str) -> Path:
    (chain,) = ledger.glob(f"{model}/_chain/*.jsonl")
    return chain


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_ledger_files_are_0600_and_folders_0700_whatever_the_umask(tmp_path, umask) -> None:
    root = tmp_path / "new" / "ledger"
    old = os.umask(umask)
    try:
        ledger = QuoteLedger(LedgerConfig(root, key=SigningKey(b"k" * 32)))
        ledger.start()
        ledger.record(new_quote_id(), "m", 1, SIGNATURE, "quote", "Production", policy(0), 1.0)
        ledger.flush()
        open_modes = {p.suffix: stat.S_IMODE(p.stat().st_mode) for p in root.rglob("*.*")}
        ledger.close()
    finally:
        os.umask(old)
    assert open_modes == {".arrows": 0o600, ".jsonl": 0o600}
    files = [p for p in root.rglob("*") if p.is_file()]
    folders = [root, *(p for p in root.rglob("*") if p.is_dir())]
    assert sorted(p.suffix for p in files) == [".jsonl", ".parquet"]
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o600}
    assert len(folders) == 5  # ledger, m, m/_chain, m/v1, m/v1/<day>
    assert {stat.S_IMODE(p.stat().st_mode) for p in folders} == {0o700}


def test_a_quote_in_a_segment_still_open_replays_as_unverified(written, tmp_path, capsys) -> None:
    registry_folder, _, _ = written
    ledger = copy(written, tmp_path)
    registry = ratekeeper.Registry(registry_folder, user="modeller")
    scorer = registry.load_model(f"models:/{MODEL}/1")
    body = {k: v for k, v in read_ledger_inputs(ledger).items() if v is not None}
    writer = QuoteLedger(LedgerConfig(ledger, key=registry.signing_key))
    writer.start()
    try:
        quote_id = new_quote_id()
        price = scorer.predict_one(body)
        writer.record(quote_id, MODEL, 1, scorer.signature, "quote", "Production", body, price)
        writer.flush()
        code, out = replay(capsys, registry_folder, ledger, quote_id)
        assert code == 0, out
        assert "identical (unverified: not yet sealed)" in out
        code, out = verify(capsys, registry_folder, ledger)
        assert code == 0, out
        assert "; 1 open segment(s), 1 open chain(s); seals checked" in out
    finally:
        writer.close()
        registry.close()
    code, out = replay(capsys, registry_folder, ledger, quote_id)
    assert code == 0 and "verified: hash, rows and chain intact, seals checked" in out


def read_ledger_inputs(ledger: Path) -> dict[str, Any]:
    return dict(pq.read_table(sealed_segments(ledger)[0]).column("inputs")[0].as_py())
