"""Actual vs expected: hand computations, Garwood intervals, costs, the CLI and the page."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import stats

import ratekeeper as rk
from ratekeeper.cli.main import main
from ratekeeper.demo import train_glm
from ratekeeper.monitoring.ae import actual_vs_expected, gamma_quantile, garwood_interval
from ratekeeper.monitoring.report import render_ae_html
from ratekeeper.synthetic import motor_portfolio
from ratekeeper.validation.stability import numeric_labels
from registries import open_registry


def test_garwood_intervals_match_the_published_values() -> None:
    # Garwood (1936), as tabulated e.g. by Ulm (1990): 95 % limits for an observed count.
    assert garwood_interval(10) == pytest.approx((4.795389, 18.390356), rel=1e-6)
    assert garwood_interval(0) == pytest.approx((0.0, 3.688879), rel=1e-6)
    assert garwood_interval(1) == pytest.approx((0.025318, 5.571643), rel=1e-5)
    assert garwood_interval(10, 0.90) == pytest.approx((5.425406, 16.962219), rel=1e-6)
    for count in (2, 37, 500, 20_000):
        lower, upper = garwood_interval(count, 0.99)
        assert lower == pytest.approx(stats.chi2.ppf(0.005, 2 * count) / 2, rel=1e-9)
        assert upper == pytest.approx(stats.chi2.ppf(0.995, 2 * count + 2) / 2, rel=1e-9)
    assert gamma_quantile(0.5, 1.0) == pytest.approx(math.log(2), rel=1e-11)  # exponential median


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ae")
    book = motor_portfolio(4000, seed=8)
    registry = open_registry(folder, user="modeller")
    registry.register_model(train_glm(book), "freq", training_data=book, exposure="exposure")
    scorer = registry.load_model("models:/freq/1")
    registry.close()
    claims = motor_portfolio(4000, seed=8)  # the same policies, so every row can be priced
    rng = np.random.default_rng(3)
    claims["claim_cost"] = claims["claim_count"] * rng.gamma(2.0, 800.0, len(claims))
    pq.write_table(pa.Table.from_pandas(claims, preserve_index=False), folder / "claims.parquet")
    return folder, scorer, claims


def test_overall_and_one_level_by_hand(setup) -> None:
    _, scorer, claims = setup
    report = actual_vs_expected(scorer, claims, actual="claim_count", by=["area", "driver_age"])
    expected = scorer.predict(claims)  # rate × exposure
    observed = claims["claim_count"].to_numpy(float)
    o, e = observed.sum(), expected.sum()
    assert report.kind == "count" and report.interval == "exact Poisson (Garwood)"
    assert (report.overall.actual, report.overall.expected) == (o, pytest.approx(e, rel=1e-12))
    assert report.overall.ratio == pytest.approx(o / e, rel=1e-12)
    low, high = stats.chi2.ppf(0.025, 2 * o) / 2, stats.chi2.ppf(0.975, 2 * o + 2) / 2
    assert (report.overall.lower, report.overall.upper) == pytest.approx(
        (low / e, high / e), rel=1e-9
    )
    c = (claims["area"] == "C").to_numpy()
    area_c = next(g for g in report.by["area"] if g.level == "C")
    assert (area_c.rows, area_c.actual) == (int(c.sum()), observed[c].sum())
    assert area_c.expected == pytest.approx(expected[c].sum(), rel=1e-12)
    assert area_c.exposure == pytest.approx(claims["exposure"][c].sum())
    lo, hi = garwood_interval(observed[c].sum())
    assert (area_c.lower, area_c.upper) == pytest.approx(
        (lo / expected[c].sum(), hi / expected[c].sum()), rel=1e-12
    )
    assert [g.level for g in report.by["area"]] == ["A", "B", "C", "D", "E", "F"]
    # A numeric factor is grouped by its reference-profile bins.
    edges = scorer.package.profile.factors["driver_age"].edges
    assert [g.level for g in report.by["driver_age"]] == list(numeric_labels(edges))
    assert sum(g.rows for g in report.by["driver_age"]) == 4000
    assert sum(g.actual for g in report.by["driver_age"]) == o


def test_costs_get_a_normal_interval_not_a_poisson_one(setup) -> None:
    _, scorer, claims = setup
    report = actual_vs_expected(scorer, claims, actual="claim_cost", by=["fuel"])
    assert report.kind == "cost" and report.interval == "normal approximation"
    a = claims["claim_cost"].to_numpy()
    e = scorer.predict(claims)
    ratio = a.sum() / e.sum()
    spread = math.sqrt(float(np.sum((a - ratio * e) ** 2)))
    z = 1.959963984540054
    assert report.overall.ratio == pytest.approx(ratio, rel=1e-12)
    assert report.overall.lower == pytest.approx((a.sum() - z * spread) / e.sum(), rel=1e-9)
    assert report.overall.upper == pytest.approx((a.sum() + z * spread) / e.sum(), rel=1e-9)


def test_rows_that_cannot_be_priced_or_lack_an_actual_are_left_out(setup) -> None:
    _, scorer, claims = setup
    broken = claims.copy()
    broken["claim_count"] = broken["claim_count"].astype(float)
    broken.loc[:9, "claim_count"] = math.nan
    broken["area"] = broken["area"].astype(object)
    broken.loc[10:14, "area"] = "Z"
    report = actual_vs_expected(scorer, broken, actual="claim_count", by=[])
    assert (report.rows, report.excluded_rows) == (3985, 15)
    assert report.notes == (
        "15 of 4,000 rows left out: 5 fail the signature, 10 have no valid claim_count",
    )
    with pytest.raises(rk.InvalidInputError, match=r"^--by takes rating factors of freq: gender"):
        actual_vs_expected(scorer, claims, actual="claim_count", by=["gender"])
    with pytest.raises(rk.InvalidInputError, match=r"^the data lacks 1 column\(s\) .*: claims$"):
        actual_vs_expected(scorer, claims, actual="claims")
    with pytest.raises(rk.InvalidInputError, match=r"^the confidence level must be between"):
        actual_vs_expected(scorer, claims, actual="claim_count", level=95)


def run(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def test_the_command_prints_json_tables_and_a_self_contained_page(capsys, setup) -> None:
    folder, scorer, claims = setup
    data = str(folder / "claims.parquet")
    base = ["--registry", str(folder), "ae", "models:/freq/1", "--data", data]
    code, out, _ = run(capsys, *base, "--actual", "claim_count", "--by", "area", "--json")
    assert code == 0
    body = json.loads(out)
    assert body["overall"]["actual"] == float(claims["claim_count"].sum())
    assert list(body["by"]) == ["area"] and len(body["by"]["area"]) == 6
    page_path = Path(folder / "ae.html")
    code, out, _ = run(
        capsys, *base, "--actual", "claim_count", "--by", "area", "--by", "power_kw",
        "--level", "0.9", "--report", str(page_path),
    )  # fmt: skip
    assert code == 0
    assert "A/E — freq v1: claim_count (count, 90% exact Poisson (Garwood) interval)" in out
    assert "by power_kw" in out
    page = page_path.read_text()
    assert page.count('<svg class="chart"') == 2
    assert "http" not in page and "<script" not in page
    code, _, err = run(capsys, *base, "--actual", "claim_count", "--by", "gender")
    assert code == 2 and "gender is not one" in err
    assert render_ae_html(actual_vs_expected(scorer, claims, actual="claim_count")).count(
        "<svg"
    ) == len(scorer.signature.rating_factors)
