"""Population drift: PSI by hand, the floor, bands, the report and the CLI's exit codes."""

from __future__ import annotations

import importlib.util
import json
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import ratekeeper as rk
from ratekeeper.cli.main import main
from ratekeeper.cli.monitoring_commands import parse_since
from ratekeeper.demo import train_glm
from ratekeeper.monitoring import Bands, drift
from ratekeeper.monitoring.report import render_drift_html
from ratekeeper.packaging.profile import LevelShares, NumericBins, ReferenceProfile
from ratekeeper.packaging.signature import CATEGORICAL, EXPOSURE, NUMERIC, Field, Signature
from ratekeeper.registry.entities import ModelVersion, Stage
from ratekeeper.synthetic import motor_portfolio
from ratekeeper.validation.stability import chi2_sf
from registries import open_registry

CHROMIUM = Path("/usr/bin/chromium")


def hand_version() -> ModelVersion:
    """A version with a two-factor profile small enough to check by hand."""
    signature = Signature(
        (
            Field("driver_age", NUMERIC),
            Field("area", CATEGORICAL, levels=("A", "B")),
            Field("exposure", NUMERIC, role=EXPOSURE),
        )
    )
    profile = ReferenceProfile(
        factors={
            "driver_age": NumericBins(edges=(30.0, 50.0), shares=(0.3, 0.5, 0.2), missing_share=0),
            "area": LevelShares(
                levels=("A", "B"), shares=(0.6, 0.4), other_share=0, missing_share=0
            ),
        },
        prediction=NumericBins(edges=(0.1,), shares=(0.5, 0.5), missing_share=0.0),
        rows=100,
        weight="exposure",
        total_weight=80.0,
    )
    now = datetime.now(UTC)
    return ModelVersion(
        "hand", 1, "glm", "0" * 64, 0, Stage.NONE, now, "alice", now, None, signature, profile,
        {}, {},
    )  # fmt: skip


HAND_DATA = pd.DataFrame(
    {
        "driver_age": [25.0, 30.0, 40.0, 60.0, math.nan],
        "area": ["A", "B", "C", None, "A"],
        "exposure": [1.0, 0.5, 1.0, 2.0, 0.5],
    }
)


def test_psi_of_a_numeric_factor_by_hand() -> None:
    report = drift(hand_version(), HAND_DATA)
    age = report.factor("driver_age")
    # Right-closed bins (−inf, 30], (30, 50], (50, inf), missing; total exposure 5:
    #   25 (1.0) and 30 (0.5) → ≤ 30 = 1.5; 40 (1.0) → (30, 50]; 60 (2.0) → > 50; NaN (0.5) missing
    actual = [1.5 / 5, 1.0 / 5, 2.0 / 5, 0.5 / 5]  # 0.3, 0.2, 0.4, 0.1
    assert age.stability.actual == pytest.approx(actual)
    assert age.stability.expected == (0.3, 0.5, 0.2, 0.0)
    assert age.stability.labels == ("≤ 30", "(30, 50]", "> 50", "missing")
    # PSI = Σ (a − e) ln(a / e), the empty reference missing bin floored at 1e-4:
    hand = (
        (0.3 - 0.3) * math.log(0.3 / 0.3)  # 0
        + (0.2 - 0.5) * math.log(0.2 / 0.5)  # 0.274887
        + (0.4 - 0.2) * math.log(0.4 / 0.2)  # 0.138629
        + (0.1 - 1e-4) * math.log(0.1 / 1e-4)  # 0.690085
    )
    assert hand == pytest.approx(1.103602, abs=1e-6)
    assert age.psi == pytest.approx(hand, rel=1e-12)
    assert age.band == "alert"
    # Effective sample size (Σw)² / Σw² = 25 / 6.5; χ² = n Σ (a − e)² / e over the 4 used bins.
    n = 5.0**2 / (1 + 0.25 + 1 + 4 + 0.25)
    assert age.sample_size == pytest.approx(n)
    statistic = n * (0 + 0.3**2 / 0.5 + 0.2**2 / 0.2 + (0.1 - 1e-4) ** 2 / 1e-4)
    assert age.stability.statistic == pytest.approx(statistic, rel=1e-12)
    assert age.stability.degrees_of_freedom == 3
    assert age.p_value == pytest.approx(chi2_sf(statistic, 3))
    assert (age.rows, age.total_weight) == (5, 5.0)


def test_psi_of_a_categorical_factor_by_hand() -> None:
    area = drift(hand_version(), HAND_DATA).factor("area")
    # A: 1.0 + 0.5, B: 0.5, C (never seen) → other: 1.0, None → missing: 2.0; of 5
    assert area.stability.labels == ("A", "B", "other", "missing")
    assert area.stability.actual == pytest.approx((0.3, 0.1, 0.2, 0.4))
    hand = (
        (0.3 - 0.6) * math.log(0.3 / 0.6)
        + (0.1 - 0.4) * math.log(0.1 / 0.4)
        + (0.2 - 1e-4) * math.log(0.2 / 1e-4)
        + (0.4 - 1e-4) * math.log(0.4 / 1e-4)
    )
    assert area.psi == pytest.approx(hand, rel=1e-12)


def test_empty_bins_are_floored_at_1e4_and_empty_on_both_sides_add_nothing() -> None:
    # Everything in (30, 50]: the ≤ 30 and > 50 bins are empty now, the missing bin on both sides.
    data = pd.DataFrame({"driver_age": [40.0, 45.0], "area": ["A", "B"], "exposure": [1.0, 1.0]})
    age = drift(hand_version(), data).factor("driver_age")
    assert age.stability.actual == (0.0, 1.0, 0.0, 0.0)
    hand = (
        (1e-4 - 0.3) * math.log(1e-4 / 0.3)
        + (1.0 - 0.5) * math.log(1.0 / 0.5)
        + (1e-4 - 0.2) * math.log(1e-4 / 0.2)
    )  # + (1e-4 − 1e-4) × ln 1 = 0 for the missing bin
    assert age.psi == pytest.approx(hand, rel=1e-12)
    assert age.stability.degrees_of_freedom == 2  # three bins hold weight on one side or both


def test_chi_square_p_values_match_the_tables() -> None:
    # The 5 % critical values of the chi-square distribution (any statistics table).
    assert chi2_sf(3.841459, 1) == pytest.approx(0.05, rel=1e-5)
    assert chi2_sf(7.814728, 3) == pytest.approx(0.05, rel=1e-5)
    assert chi2_sf(16.918978, 9) == pytest.approx(0.05, rel=1e-5)
    assert chi2_sf(21.665994, 9) == pytest.approx(0.01, rel=1e-5)


def test_bands_and_the_worst_band_decides() -> None:
    bands = Bands(0.10, 0.25)
    assert [bands.band(v) for v in (0.0, 0.0999, 0.10, 0.2499, 0.25, 3.0)] == [
        "stable", "stable", "warn", "warn", "alert", "alert",
    ]  # fmt: skip
    report = drift(hand_version(), HAND_DATA, bands=Bands(6.0, 10.0))  # area 5.46, driver_age 1.10
    assert report.status == "stable" and report.exit_code == 0
    report = drift(hand_version(), HAND_DATA, bands=Bands(1.0, 10.0))
    assert {d.name: d.band for d in report.factors} == {"driver_age": "warn", "area": "warn"}
    assert report.status == "warn" and report.exit_code == 1
    with pytest.raises(rk.InvalidInputError, match=r"^the warn threshold \(0.3\) must not exceed"):
        Bands(0.3, 0.2)
    with pytest.raises(rk.InvalidInputError, match=r"^the alert threshold must be ≥ 0, got -1"):
        Bands(0.1, -1)


def test_a_version_alone_compares_the_factors_only() -> None:
    report = drift(hand_version(), pa.Table.from_pandas(HAND_DATA))
    assert report.prediction is None
    assert report.notes == ("prediction not compared: a model version without its scorer",)
    assert report.to_dict()["factors"][0]["psi"] == pytest.approx(1.103602, abs=1e-6)


def test_missing_columns_and_exposure_are_named() -> None:
    with pytest.raises(rk.InvalidInputError, match=r"^the data lacks 1 column\(s\) .*: area$"):
        drift(hand_version(), HAND_DATA.drop(columns="area"))
    with pytest.raises(rk.InvalidInputError, match=r"^the data has no rows$"):
        drift(hand_version(), HAND_DATA.head(0))
    renamed = HAND_DATA.rename(columns={"exposure": "expo"})
    assert drift(hand_version(), renamed, exposure="expo").factor("area").psi == pytest.approx(
        drift(hand_version(), HAND_DATA).factor("area").psi
    )


# -- with a real registered model --------------------------------------------------------------
@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("drift")
    book = motor_portfolio(4000, seed=5)
    registry = open_registry(folder, user="modeller")
    registry.register_model(train_glm(book), "freq", training_data=book, exposure="exposure")
    registry.close()
    pq.write_table(pa.Table.from_pandas(book, preserve_index=False), folder / "train.parquet")
    same = motor_portfolio(4000, seed=6)
    pq.write_table(pa.Table.from_pandas(same, preserve_index=False), folder / "same.parquet")
    older = same.assign(driver_age=same["driver_age"] + 12)
    pq.write_table(pa.Table.from_pandas(older, preserve_index=False), folder / "older.parquet")
    same.to_csv(folder / "same.csv", index=False)
    return folder


def run(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def test_a_book_like_the_training_one_is_stable_exit_0(capsys, home) -> None:
    code, out, _ = run(
        capsys, "--registry", str(home), "drift", "models:/freq/1", "--data",
        str(home / "same.parquet"),
    )  # fmt: skip
    assert code == 0, out
    assert "Drift — freq v1: STABLE" in out
    for name in ("area", "driver_age", "power_kw", "prediction"):
        assert name in out


def test_an_older_book_alerts_exit_2_and_says_why_in_json(capsys, home) -> None:
    code, out, _ = run(
        capsys, "--registry", str(home), "drift", "models:/freq/1", "--data",
        str(home / "older.parquet"), "--json",
    )  # fmt: skip
    assert code == 2
    body = json.loads(out)
    bands = {f["name"]: f["band"] for f in body["factors"]}
    assert bands["driver_age"] == "alert"
    assert {bands[n] for n in ("area", "fuel", "cover", "vehicle_age")} == {"stable"}
    assert body["status"] == "alert" and body["share_floor"] == 1e-4
    assert body["prediction"]["rows"] + body["excluded_rows"] == 4000
    # Drivers 12 years older fall outside the training range: those rows cannot be priced.
    assert body["excluded_rows"] > 0
    reasons = body["exclusions"]
    assert max(reasons, key=reasons.get) == "driver_age: out_of_range"


def test_thresholds_between_the_psis_give_a_warning_exit_1(capsys, home) -> None:
    scorer = rk.load_model("models:/freq/1", rk.Registry(home))
    book = pq.read_table(home / "older.parquet")
    psi = drift(scorer, book).factor("driver_age").psi
    code, out, _ = run(
        capsys, "--registry", str(home), "drift", "models:/freq/1", "--data",
        str(home / "older.parquet"), "--warn", f"{psi * 0.9}", "--alert", f"{psi * 1.1}",
    )  # fmt: skip
    assert code == 1, out
    assert ": WARN" in out


def test_csv_pandas_and_arrow_give_the_same_psis(home) -> None:
    registry = rk.Registry(home)
    scorer = registry.load_model("models:/freq/1")
    from ratekeeper.monitoring.columns import read_columns

    frame = pd.read_parquet(home / "same.parquet")
    a = drift(scorer, frame)
    b = drift(scorer, pq.read_table(home / "same.parquet"))
    c = drift(scorer, read_columns(home / "same.csv", frame.columns, ["area", "fuel", "cover"]))
    for x, y, z in zip(a.all, b.all, c.all, strict=True):
        assert x.psi == pytest.approx(y.psi, rel=1e-12) == pytest.approx(z.psi, rel=1e-9)
    registry.close()


def test_unseen_levels_and_missing_values_count_in_their_bins(home) -> None:
    registry = rk.Registry(home)
    scorer = registry.load_model("models:/freq/1")
    book = pd.read_parquet(home / "train.parquet")  # every row within the training ranges
    book["area"] = book["area"].astype(object)
    book.loc[:99, "area"] = "Z"  # 100 policies in an area the model never saw
    book["vehicle_age"] = book["vehicle_age"].astype(float)
    book.loc[100:149, "vehicle_age"] = math.nan
    report = drift(scorer, book)
    area = report.factor("area").stability
    share = dict(zip(area.labels, area.actual, strict=True))
    assert share["other"] == pytest.approx(book["exposure"][:100].sum() / book["exposure"].sum())
    vehicle = report.factor("vehicle_age").stability
    missing = book["exposure"][100:150].sum() / book["exposure"].sum()
    assert vehicle.actual[-1] == pytest.approx(missing)
    assert report.excluded_rows == 150
    assert report.exclusions == {"area: unseen_level": 100, "vehicle_age: not_finite": 50}
    assert report.prediction is not None and report.prediction.rows == 3850
    registry.close()


def test_failures_exit_with_their_own_codes_never_0_1_2(capsys, home) -> None:
    base = ["--registry", str(home), "drift"]
    data = ["--data", str(home / "same.parquet")]
    code, _, err = run(capsys, *base, "models:/freq/9", *data)
    assert (code, err.strip()) == (13, "error: model 'freq' has no version 9")
    code, _, err = run(capsys, *base, "models:/freq/1", "--data", str(home / "absent.parquet"))
    assert (code, err.strip()) == (12, f"error: {home / 'absent.parquet'}: no such file")
    code, _, err = run(capsys, *base, "models:/freq/1", *data, "--warn", "high")
    assert code == 12 and "'high' is not a valid float" in err
    code, _, err = run(capsys, *base, "models:/freq/1", *data, "--warn", "0.5", "--alert", "0.2")
    assert code == 12 and "must not exceed the alert one" in err
    code, _, err = run(capsys, *base, "models:/freq/1", *data, "--since", "7d")
    assert (code, err.strip()) == (12, "error: --since and --ledger-dir go with --ledger")
    code, _, err = run(capsys, *base, "models:/freq/1")
    assert (code, err.strip()) == (12, "error: give --data PATH (or --ledger)")
    code, _, err = run(capsys, *base, "models:/freq/1", "--ledger", "--since", "a week")
    assert code == 12 and "give a duration such as 30m, 24h or 7d" in err


def record_quotes(home: Path, ledger: Path, n: int) -> None:
    """``n`` quotes of freq v1 from a book like the training one, as the rating engine records."""
    from ratekeeper.engine.ids import new_quote_id
    from ratekeeper.engine.ledger import LedgerConfig, recording

    registry = rk.Registry(home)
    scorer = registry.load_model("models:/freq/1")
    book = pd.read_parquet(home / "same.parquet").head(n)
    rows = book[list(scorer.signature.names)].to_dict("records")
    with recording(LedgerConfig(ledger)) as quotes:
        for row in rows:
            price = scorer.predict_one(row)
            quotes.record(
                new_quote_id(), "freq", 1, scorer.signature, "quote", "Production", row, price
            )
    registry.close()


def test_one_quote_is_not_enough_to_judge_exit_3(capsys, home, tmp_path) -> None:
    ledger = tmp_path / "ledger"
    record_quotes(home, ledger, 1)
    base = ["--registry", str(home), "drift", "models:/freq/1", "--ledger"]
    code, out, _ = run(capsys, *base, "--ledger-dir", str(ledger), "--since", "7d")
    assert code == 3, out
    assert (
        "freq v1: INSUFFICIENT: not enough quotes in the last 7d (1 of at least 500): "
        "drift not judged"
    ) in " ".join(out.split())
    code, out, _ = run(capsys, *base, "--ledger-dir", str(ledger), "--json")
    assert code == 3
    assert json.loads(out) == {
        "model": "freq",
        "version": 1,
        "status": "insufficient",
        "rows": 1,
        "min_rows": 500,
        "message": "not enough quotes (1 of at least 500): drift not judged",
    }


def test_the_cli_minimum_is_the_live_watchers(capsys, home, tmp_path) -> None:
    from ratekeeper.engine.drift_watcher import DriftWatchConfig
    from ratekeeper.monitoring.drift import MIN_SAMPLE

    assert DriftWatchConfig(tmp_path).min_quotes == MIN_SAMPLE == 500
    ledger = tmp_path / "ledger"
    record_quotes(home, ledger, MIN_SAMPLE)
    code, out, _ = run(
        capsys, "--registry", str(home), "drift", "models:/freq/1", "--ledger",
        "--ledger-dir", str(ledger), "--json",
    )  # fmt: skip
    assert code == 0, out  # 500 quotes like the training book: judged, and stable
    body = json.loads(out)
    assert (body["status"], body["rows"]) == ("stable", 500)


def test_too_few_rows_of_data_are_not_judged_unless_the_minimum_is_lowered(
    capsys, home, tmp_path
) -> None:
    few = tmp_path / "few.parquet"
    pq.write_table(pq.read_table(home / "older.parquet").slice(0, 120), few)
    base = ["--registry", str(home), "drift", "models:/freq/1", "--data", str(few)]
    report = tmp_path / "drift.html"
    code, out, _ = run(capsys, *base, "--report", str(report))
    assert code == 3, out
    assert "not enough rows (120 of at least 500): drift not judged" in " ".join(out.split())
    assert not report.exists()
    code, out, _ = run(capsys, *base, "--min-rows", "100", "--json")
    assert code == 2, out  # drivers 12 years older: an alert, on 120 rows judged
    assert json.loads(out)["rows"] == 120
    code, _, err = run(capsys, *base, "--min-rows", "0")
    assert code == 12 and "0 is not in the range x>=1" in err


def test_since_durations() -> None:
    now = datetime(2024, 5, 8, 12, 0, tzinfo=UTC)
    assert parse_since("7d", now) == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert parse_since("24h", now) == datetime(2024, 5, 7, 12, 0, tzinfo=UTC)
    assert parse_since("30m", now) == datetime(2024, 5, 8, 11, 30, tzinfo=UTC)
    with pytest.raises(rk.InvalidInputError, match=r"^--since '7 days': give a duration"):
        parse_since("7 days", now)


# -- the HTML report ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def older_report(home):
    registry = rk.Registry(home)
    report = drift(registry.load_model("models:/freq/1"), pq.read_table(home / "older.parquet"))
    registry.close()
    return report


def test_the_page_is_self_contained_and_escaped(older_report) -> None:
    page = render_drift_html(older_report)
    assert "http://" not in page and "https://" not in page
    for pattern in ("<script", "<link", "@import", "url(", " src=", " href="):
        assert pattern not in page
    assert page.count('<svg class="chart"') == len(older_report.all) == 8
    assert '<span class="verdict FAIL">ALERT</span>' in page
    evil = drift(
        hand_version(),
        HAND_DATA.assign(area=["<script>alert(1)</script>", "B", "C", None, "A"]),
    )
    assert "<script>" not in render_drift_html(evil)


def test_a_real_headless_chromium_draws_one_chart_per_factor(older_report, tmp_path) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: the browser check needs a system Chromium")
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("the Python playwright package is not installed (pip install playwright)")
    from playwright.sync_api import sync_playwright

    path = tmp_path / "drift.html"
    path.write_text(render_drift_html(older_report), encoding="utf-8")
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page()
            page.on("request", lambda request: requests.append(request.url))
            page.goto(path.as_uri())
            assert page.title() == "Drift — freq v1"
            assert page.locator("#status").inner_text() == "ALERT"
            charts = page.locator("svg.chart")
            assert charts.count() == 8
            for i in range(charts.count()):
                box = charts.nth(i).bounding_box()
                assert box is not None and box["width"] > 300 and box["height"] > 200
            # Two series per chart: reference and current bars for every bin.
            age = page.locator("#factor-driver_age svg.chart rect.bar")
            bins = len(older_report.factor("driver_age").stability.labels)
            assert age.count() == 2 * bins
            page.screenshot(path=str(tmp_path / "drift.png"), full_page=True)
        finally:
            browser.close()
    assert requests == [path.as_uri()]
    assert (tmp_path / "drift.png").stat().st_size > 10_000


def test_numeric_bins_keep_nan_and_inf_apart() -> None:
    from ratekeeper.validation.stability import numeric_bin_sums

    values = np.array([-np.inf, 1.0, 2.0, 2.5, np.inf, np.nan])
    sums = numeric_bin_sums((1.0, 2.0), values, None)
    assert sums.tolist() == [2.0, 1.0, 2.0, 1.0]  # ≤ 1, (1, 2], > 2, missing
