"""Batch scoring of files: every row priced or rejected with reasons, stamped, atomic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from tests.http_helpers import glm_and_gbm

import ratekeeper as rk
from ratekeeper.cli.main import main
from ratekeeper.synthetic import motor_portfolio

MODEL = "motor_frequency"
GLM = "models:/motor_frequency/1"
GBM = "models:/motor_frequency/2"
STRINGS = ("area", "fuel", "cover", "gender")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> rk.Registry:
    registry, _ = glm_and_gbm(tmp_path_factory.mktemp("batch") / "registry")
    return registry


def book_with_bad_rows(n: int, seed: int = 9) -> Any:
    """``n`` policies; rows 5 and 9 fail the signature, row 12 twice."""
    book = motor_portfolio(n, seed=seed)
    for name in STRINGS:
        book[name] = book[name].astype(str)
    book.loc[5, "area"] = "Z"
    book.loc[9, "driver_age"] = 140
    book.loc[12, ["fuel", "exposure"]] = ["hydrogen", 0.0]
    return book


BAD_ROWS = [5, 9, 12]


def write(book: Any, path: Path) -> Path:
    if path.suffix == ".csv":
        book.to_csv(path, index=False)
    else:
        pq.write_table(pa.Table.from_pandas(book, preserve_index=False), path)
    return path


@pytest.mark.parametrize("uri", [GLM, GBM])
def test_every_row_is_priced_or_rejected_with_its_reasons(registry, tmp_path, uri) -> None:
    book = book_with_bad_rows(2000)
    source = write(book, tmp_path / "book.parquet")
    summary = registry.score_file(
        uri, source, tmp_path / "priced.parquet", rejects=tmp_path / "bad.parquet", chunk_rows=700
    )
    version = registry.resolve(uri).version
    assert (summary.rows_read, summary.rows_priced, summary.rows_rejected) == (2000, 1997, 3)
    assert (summary.model, summary.version) == (MODEL, version)
    assert summary.rejects == tmp_path / "bad.parquet"

    priced = pq.read_table(tmp_path / "priced.parquet").to_pandas()
    good = book.drop(index=BAD_ROWS)
    assert list(priced.columns) == [*book.columns, *rk_stamps()]
    assert priced["policy_id"].tolist() == good["policy_id"].tolist()  # input order kept
    expected = registry.load_model(uri).predict(good)
    np.testing.assert_array_equal(priced["prediction"].to_numpy(), expected)
    assert set(priced["model_name"]) == {MODEL}
    assert set(priced["model_version"]) == {version}
    assert priced["scored_at"].unique().tolist() == [pd_timestamp(summary.scored_at)]

    rejects = pq.read_table(tmp_path / "bad.parquet").to_pandas()
    assert list(rejects.columns) == [*book.columns, "row_number", "reasons"]
    assert rejects["row_number"].tolist() == BAD_ROWS
    assert rejects["policy_id"].tolist() == [6, 10, 13]
    reasons = rejects["reasons"].tolist()
    assert reasons[0] == (
        "area: unseen_level (level 'Z' was not in the training data "
        "(known: 'A', 'B', 'C', 'D', 'E', 'F'))"
    )
    assert reasons[1] == "driver_age: out_of_range (140 is outside the training range [18, 90])"
    assert reasons[2].startswith("fuel: unseen_level (level 'hydrogen' was not in the training")
    assert reasons[2].endswith("; exposure: out_of_range (exposure must be positive, got 0.0)")


def test_csv_in_and_out_gives_the_parquet_prices(registry, tmp_path) -> None:
    book = book_with_bad_rows(1500)
    parquet = registry.score_file(
        GLM, write(book, tmp_path / "book.parquet"), tmp_path / "priced.parquet"
    )
    csv = registry.score_file(GLM, write(book, tmp_path / "book.csv"), tmp_path / "priced.csv")
    assert csv.rows_priced == parquet.rows_priced
    assert csv.rows_rejected == parquet.rows_rejected >= 3
    # Without --rejects, rejected rows go beside the output, in its format.
    assert csv.rejects == tmp_path / "priced.rejects.csv"
    assert parquet.rejects == tmp_path / "priced.rejects.parquet"
    import pyarrow.csv as pacsv

    from_csv = pacsv.read_csv(tmp_path / "priced.csv")
    from_parquet = pq.read_table(tmp_path / "priced.parquet")
    np.testing.assert_array_equal(
        from_csv["prediction"].to_numpy(), from_parquet["prediction"].to_numpy()
    )
    csv_rejects = pacsv.read_csv(tmp_path / "priced.rejects.csv")
    parquet_rejects = pq.read_table(tmp_path / "priced.rejects.parquet")
    for name in ("row_number", "reasons"):
        assert csv_rejects[name].to_pylist() == parquet_rejects[name].to_pylist()


def test_no_rejects_file_when_nothing_is_rejected(registry, tmp_path) -> None:
    book = motor_portfolio(500, seed=3)
    summary = registry.score_file(
        GLM, write(book, tmp_path / "book.parquet"), tmp_path / "priced.parquet"
    )
    assert (summary.rows_priced, summary.rows_rejected, summary.rejects) == (500, 0, None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["book.parquet", "priced.parquet"]


def test_too_many_rejects_or_a_missing_factor_write_nothing(registry, tmp_path) -> None:
    book = book_with_bad_rows(1000)
    source = write(book, tmp_path / "book.parquet")
    with pytest.raises(rk.InvalidInputError, match=r"more than 2 policies rejected"):
        registry.score_file(GLM, source, tmp_path / "priced.parquet", max_rejects=2)
    lacking = write(book.drop(columns=["area"]), tmp_path / "lacking.parquet")
    with pytest.raises(
        rk.InvalidInputError, match=r"no policy can be priced: area: missing \(column is missing\)"
    ):
        registry.score_file(GLM, lacking, tmp_path / "priced.parquet")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["book.parquet", "lacking.parquet"]


def test_a_failed_run_keeps_the_previous_output(registry, tmp_path) -> None:
    source = write(book_with_bad_rows(300), tmp_path / "book.parquet")
    target = tmp_path / "priced.parquet"
    target.write_bytes(b"yesterday's prices")
    with pytest.raises(rk.InvalidInputError, match=r"more than 0 policies rejected"):
        registry.score_file(GLM, source, target, max_rejects=0)
    assert target.read_bytes() == b"yesterday's prices"


def test_a_csv_cell_that_is_not_a_number_rejects_its_row_only(registry, tmp_path) -> None:
    book = motor_portfolio(60_000, seed=4)
    book["driver_age"] = book["driver_age"].astype(object)
    book.loc[50_000, "driver_age"] = "forty"  # deep in the file: a later chunk
    book.loc[7, "driver_age"] = "4O"
    source = write(book, tmp_path / "book.csv")
    summary = registry.score_file(
        GLM, source, tmp_path / "priced.csv", rejects=tmp_path / "r.csv", chunk_rows=4096
    )
    clean = book.drop(index=[7, 50_000]).astype({"driver_age": float})
    expected = registry.score_file(
        GLM, write(clean, tmp_path / "clean.parquet"), tmp_path / "clean-priced.parquet"
    )
    assert summary.rows_priced == expected.rows_priced
    assert summary.rows_rejected == expected.rows_rejected + 2
    rejects = pacsv.read_csv(tmp_path / "r.csv").to_pandas().set_index("row_number")
    assert rejects.loc[[7, 50_000], "reasons"].tolist() == [
        "driver_age: wrong_type (expected a number, got the text '4O')",
        "driver_age: wrong_type (expected a number, got the text 'forty')",
    ]
    priced = pacsv.read_csv(tmp_path / "priced.csv")
    want = pq.read_table(tmp_path / "clean-priced.parquet").column("prediction").to_numpy()
    np.testing.assert_allclose(priced.column("prediction").to_numpy(), want, rtol=1e-12)


def test_a_csv_line_that_cannot_be_read_stops_the_run_and_writes_nothing(
    registry, tmp_path
) -> None:
    """The next chunk is read while this one is written: its error still stops the run."""
    source = write(motor_portfolio(60_000, seed=4), tmp_path / "book.csv")
    lines = source.read_text().splitlines()
    lines[50_000] += ",an extra cell"
    source.write_text("\n".join(lines) + "\n")
    with pytest.raises(rk.InvalidInputError, match=r"cannot read book\.csv as CSV: .*columns"):
        registry.score_file(GLM, source, tmp_path / "priced.csv", chunk_rows=4096)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["book.csv"]


def test_bad_arguments_are_named(registry, tmp_path) -> None:
    source = write(motor_portfolio(10), tmp_path / "book.parquet")
    with pytest.raises(rk.InvalidInputError, match="must not overwrite the input"):
        registry.score_file(GLM, source, source)
    with pytest.raises(rk.InvalidInputError, match=r"cannot tell the format of priced\.txt"):
        registry.score_file(GLM, source, tmp_path / "priced.txt")
    with pytest.raises(rk.InvalidInputError, match=r"input file .*nope\.parquet does not exist"):
        registry.score_file(GLM, tmp_path / "nope.parquet", tmp_path / "out.parquet")
    scored = tmp_path / "scored.parquet"
    registry.score_file(GLM, source, scored)
    with pytest.raises(rk.InvalidInputError, match=r"already has column.*prediction, model_name"):
        registry.score_file(GLM, scored, tmp_path / "again.parquet")


def test_the_score_command(registry, tmp_path, capsys) -> None:
    source = write(book_with_bad_rows(800), tmp_path / "book.csv")
    home = str(Path(registry.url.removeprefix("sqlite:///")).parent)
    code, out, err = run(
        capsys, "--registry", home, "score", GLM, "--input", str(source), "--output",
        str(tmp_path / "priced.parquet"),
    )  # fmt: skip
    assert code == 0, err
    assert "priced 796 of 800 policies with motor_frequency v1" in out
    assert f"rejected 4 -> {tmp_path / 'priced.rejects.parquet'}" in out
    assert pq.read_table(tmp_path / "priced.parquet").num_rows == 796

    code, _, err = run(
        capsys, "--registry", home, "score", GLM, "--input", str(source), "--output",
        str(tmp_path / "again.parquet"), "--max-rejects", "1",
    )  # fmt: skip
    assert code == 2
    assert err.strip() == ("error: more than 1 policies rejected (--max-rejects): nothing written")


def test_glm_row_and_column_paths_agree_bit_for_bit(registry) -> None:
    """The quote path (predict_one) and the batch path (numpy) give identical floats."""
    scorer = registry.load_model(GLM)
    book = motor_portfolio(11_000, seed=11)
    book = book[~scorer.check(book).bad_rows].head(10_000)
    assert len(book) == 10_000
    batch = scorer.predict(book)
    fields = list(scorer.signature.names)
    records = book[fields].astype({name: str for name in STRINGS[:3]}).to_dict("records")
    online = np.array([scorer.predict_one(policy) for policy in records])
    assert (online == batch).all()


def rk_stamps() -> list[str]:
    return ["prediction", "model_name", "model_version", "scored_at"]


def pd_timestamp(value: Any) -> Any:
    import pandas as pd

    return pd.Timestamp(value)


def run(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err
