"""Verifying the quote ledger: re-hash the sealed segments and check the chains that record them.

A segment passes when a chain holds a ``sealed`` entry for it whose SHA-256 and row count match the
file, and that chain's entries are all numbered in order, each linked to the one before and (with
the key) each sealed; a chain must end in its ``closed`` entry unless its writer is still running.
What it reports, per segment: rows deleted, edited or reordered (the hash, or the row count,
differs), a segment missing, a segment no chain recorded (slipped in), an entry edited or the
chain re-written without the key (a seal fails), a chain cut short (no ``closed`` entry although
its writer is not running).
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from ratekeeper.engine.ledger_chain import (
    CHAIN_FOLDER,
    CHAIN_SUFFIX,
    CLOSED,
    OPENED,
    PURPOSE,
    SEALED,
    body_of,
    canonical,
    chain_host,
    entry_hash,
    file_sha256,
    is_live,
)
from ratekeeper.errors import NotFoundError
from ratekeeper.governance.signing import SigningKey

OPEN_SUFFIX, CLOSED_SUFFIX = ".arrows", ".parquet"


@dataclass(frozen=True)
class Failure:
    segment: str
    """The segment at fault (relative to the ledger root), else the chain file."""
    reason: str
    chain: str | None = None


@dataclass
class LedgerVerification:
    root: Path
    seals_checked: bool
    segments: int = 0
    """Sealed segments re-hashed (in range)."""
    rows: int = 0
    chains: int = 0
    open_segments: int = 0
    """Segments still being written: nothing to verify yet."""
    open_chains: int = 0
    """Chains whose writer runs (here, or on another host): their end is not sealed yet."""
    failures: list[Failure] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        if self.failures:
            first = self.failures[0]
            more = len(self.failures) - 1
            return f"segment {first.segment}: {first.reason}" + (
                f" (and {more} more failure{'s' * (more > 1)})" if more else ""
            )
        text = (
            f"ledger intact: {self.segments:,} sealed segment{'s' * (self.segments != 1)}, "
            f"{self.rows:,} rows, {self.chains:,} chain{'s' * (self.chains != 1)}"
        )
        if self.open_segments or self.open_chains:
            text += f"; {self.open_segments} open segment(s), {self.open_chains} open chain(s)"
        return text + (
            "; seals checked" if self.seals_checked else "; seals NOT checked (no signing key)"
        )


@dataclass(frozen=True)
class SegmentCheck:
    """A segment's state, for ``replay``: ``verified``, ``open`` (not yet sealed), ``failed``."""

    state: str
    reason: str
    seals_checked: bool


def verify_ledger(
    root: Path,
    key: SigningKey | None,
    *,
    since: datetime | None = None,
    model: str | None = None,
) -> LedgerVerification:
    """Check every chain and re-hash every sealed segment whose last quote is after ``since``."""
    if not root.is_dir():
        raise NotFoundError(f"there is no quote ledger at {root}")
    if model is not None and not (root / model).is_dir():
        raise NotFoundError(f"the quote ledger at {root} holds no quotes of {model}")
    result = LedgerVerification(root, seals_checked=key is not None)
    models = [model] if model is not None else sorted(p.name for p in root.iterdir() if p.is_dir())
    for name in models:
        _verify_model(root, name, key, since, None, result)
    return result


def verify_segment(root: Path, segment: Path, key: SigningKey | None) -> SegmentCheck:
    """The state of the segment a quote was found in (open or sealed), and of its chain."""
    relative = segment.with_suffix(CLOSED_SUFFIX).relative_to(root).as_posix()
    result = LedgerVerification(root, seals_checked=key is not None)
    state = _verify_model(root, relative.split("/")[0], key, None, relative, result)
    if result.failures:
        return SegmentCheck("failed", result.failures[0].reason, key is not None)
    if state == "open":
        return SegmentCheck("open", "not yet sealed: cannot be verified", key is not None)
    reason = "hash, rows and chain intact" + (
        ", seals checked" if key is not None else "; seals NOT checked (no signing key)"
    )
    return SegmentCheck("verified", reason, key is not None)


@dataclass
class _Chain:
    path: Path
    entries: list[dict[str, Any]]
    live: bool = False


def _verify_model(
    root: Path,
    model: str,
    key: SigningKey | None,
    since: datetime | None,
    only: str | None,
    result: LedgerVerification,
) -> str:
    # The files first, then the chains: a writer announces a segment before creating it, so a
    # file listed here is already in the chain read after (no false "slipped in" while serving).
    files = list(_files(root, model, since))
    failures: list[Failure] = []
    chains = [_read_chain(root, model, path, key, failures) for path in _chain_files(root, model)]
    sealed: dict[str, tuple[dict[str, Any], _Chain]] = {}
    opened: dict[str, _Chain] = {}
    for chain in chains:
        for entry in chain.entries:
            segment = entry.get("segment")
            if entry.get("kind") == OPENED and isinstance(segment, str):
                opened[segment] = chain
            elif entry.get("kind") == SEALED and isinstance(segment, str):
                if segment in sealed:
                    failures.append(
                        Failure(segment, "sealed twice (a chain entry was copied)", chain.path.stem)
                    )
                sealed[segment] = (entry, chain)
    state = "sealed"
    holder = sealed[only][1].path.stem if only in sealed else None
    for segment, (entry, chain) in sealed.items():
        if (only is None and _in_range(entry, since)) or segment == only:
            failures.extend(_check_segment(root, segment, entry, chain, result, only is None))
    for path in files:
        relative = path.with_suffix(CLOSED_SUFFIX).relative_to(root).as_posix()
        if only is not None and relative != only:
            continue
        if path.suffix == OPEN_SUFFIX and relative in opened and relative not in sealed:
            result.open_segments += 1
            state = "open"
        elif path.suffix == CLOSED_SUFFIX and relative in sealed:
            continue
        elif relative in opened and opened[relative].live:
            state = "open"  # being sealed by its running writer right now
        elif path.exists() and (path.suffix == CLOSED_SUFFIX or relative not in sealed):
            failures.append(
                Failure(
                    path.relative_to(root).as_posix(),
                    "no chain records this segment (slipped in, or written outside the ledger)",
                )
            )
    if only is not None:
        if holder is None and only in opened:
            holder = opened[only].path.stem
        names = (only, str(Path(only).with_suffix(OPEN_SUFFIX).as_posix()))
        failures = [f for f in failures if f.segment in names or (holder and f.chain == holder)]
        if not failures and only not in sealed and state != "open":
            failures.append(Failure(only, "no chain records this segment (slipped in?)"))
    else:
        result.chains += len(chains)
        result.open_chains += sum(1 for c in chains if c.entries and not _closed(c))
    result.failures.extend(failures)
    return state


def _read_chain(
    root: Path, model: str, path: Path, key: SigningKey | None, failures: list[Failure]
) -> _Chain:
    """The chain's entries; its first fault (if any) goes to ``failures``."""
    chain = _Chain(path, [])
    label = path.relative_to(root).as_posix()  # the last segment named so far, else the chain
    fault: tuple[str, str] | None = None
    prev, seen_close = "", False
    for n, line in enumerate(path.read_text().splitlines()):
        try:
            entry = json.loads(line)
            if not isinstance(entry, dict):
                raise ValueError("not an object")
        except ValueError:
            fault = fault or (
                label,
                f"chain {path.stem}, entry {n} is not JSON (edited, cut short)",
            )
            break
        chain.entries.append(entry)
        if isinstance(entry.get("segment"), str):
            label = entry["segment"]
        if fault is None and (
            reason := _entry_fault(model, path.stem, n, prev, seen_close, entry, key)
        ):
            fault = (label, reason)
        prev = entry_hash(body_of(entry))
        seen_close = seen_close or entry.get("kind") == CLOSED
    end = _end_fault(chain)  # also tells whether its writer still runs
    fault = fault or ((label, end) if end is not None else None)
    if fault is not None:
        failures.append(Failure(fault[0], fault[1], path.stem))
    return chain


def _entry_fault(
    model: str,
    chain_id: str,
    n: int,
    prev: str,
    seen_close: bool,
    entry: dict[str, Any],
    key: SigningKey | None,
) -> str | None:
    where = f"chain {chain_id}, entry {n}"
    if entry.get("chain") != chain_id:
        return f"{where} names chain {entry.get('chain')!r}: moved or copied from another chain"
    if entry.get("n") != n:
        return f"{where} is numbered {entry.get('n')!r}: an entry was removed or inserted"
    if entry.get("prev") != prev:
        return f"{where} does not link to the entry before it: one was removed, edited or inserted"
    if seen_close:
        return f"{where} follows the chain's closing entry: appended after the writer stopped"
    kind = entry.get("kind")
    if kind not in (OPENED, SEALED, CLOSED):
        return f"{where} is of unknown kind {kind!r}"
    if kind != CLOSED and not str(entry.get("segment", "")).startswith(f"{model}/"):
        return f"{where} records a segment of another model"
    if key is not None:
        if not entry.get("seal"):
            return f"{where} is not sealed (written without the signing key, or its seal removed)"
        if not key.check(PURPOSE, canonical(body_of(entry)), entry["seal"]):
            return f"{where}: its seal does not match (edited, or re-chained without the key)"
    return None


def _end_fault(chain: _Chain) -> str | None:
    """A chain ends in its ``closed`` entry, matching what it sealed, or its writer still runs."""
    if not chain.entries:
        return "the chain is empty: its entries were removed"
    sealed = [e for e in chain.entries if e.get("kind") == SEALED]
    if _closed(chain):
        end = chain.entries[-1]
        if end.get("segments") != len(sealed) or end.get("rows") != sum(
            int(e.get("rows", 0)) for e in sealed
        ):
            return (
                f"chain {chain.path.stem} closed with {end.get('segments')} segments and "
                f"{end.get('rows')} rows but holds {len(sealed)} segments"
            )
        return None
    host = chain_host(chain.path)
    if host != _host():
        chain.live = True  # written on another host: whether it still runs cannot be told here
        return None
    if is_live(chain.path):
        chain.live = True
        return None
    return (
        f"chain {chain.path.stem} stops after this segment without its closing entry: later "
        "segments were removed with their entries, or its writer died and no ledger has started "
        "on this host since to close it"
    )


def _closed(chain: _Chain) -> bool:
    return bool(chain.entries) and chain.entries[-1].get("kind") == CLOSED


def _check_segment(
    root: Path,
    segment: str,
    entry: dict[str, Any],
    chain: _Chain,
    result: LedgerVerification,
    count: bool,
) -> list[Failure]:
    path = root / segment
    rows = int(entry.get("rows") or 0)
    if entry.get("sha256") is None and rows == 0:
        if path.exists():
            return [Failure(segment, "the chain sealed it empty, but a file is there", None)]
        return []
    if not path.exists():
        return [Failure(segment, f"missing: the chain sealed it with {rows} rows", None)]
    if file_sha256(path) != entry.get("sha256"):
        import pyarrow.parquet as pq

        try:
            found = pq.read_metadata(path).num_rows
        except Exception:  # not even Parquet any more
            return [Failure(segment, "its content differs from what the chain sealed", None)]
        if found != rows:
            return [
                Failure(
                    segment,
                    f"holds {found} rows, the chain sealed {rows}: rows were deleted or added",
                )
            ]
        return [
            Failure(
                segment,
                f"its SHA-256 differs from the one sealed ({rows} rows, as sealed): a row was "
                "edited or the rows reordered",
            )
        ]
    if count:
        result.segments += 1
        result.rows += rows
    return []


def _in_range(entry: dict[str, Any], since: datetime | None) -> bool:
    if since is None or entry.get("last") is None:
        return True
    return datetime.fromisoformat(str(entry["last"])) >= since.astimezone(UTC)


def _files(root: Path, model: str, since: datetime | None) -> list[Path]:
    first_day = (since - timedelta(days=1)).astimezone(UTC).date() if since is not None else None
    found: list[Path] = []
    for folder in sorted((root / model).glob("v*/*")):
        try:
            day = date.fromisoformat(folder.name)
        except ValueError:
            continue
        if first_day is not None and day < first_day:
            continue
        found.extend(sorted(folder.glob(f"*{CLOSED_SUFFIX}")))
        found.extend(sorted(folder.glob(f"*{OPEN_SUFFIX}")))
    return found


def _chain_files(root: Path, model: str) -> list[Path]:
    return sorted((root / model / CHAIN_FOLDER).glob(f"*{CHAIN_SUFFIX}"))


def _host() -> str:
    return socket.gethostname().replace("-", "_") or "host"
