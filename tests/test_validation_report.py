"""The HTML validation report: self-contained, complete, escaped, and rendered by a real browser."""

from __future__ import annotations

import importlib.util
import re
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import PoissonRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

import ratekeeper as rk
from ratekeeper.demo import train_glm
from ratekeeper.synthetic import CATEGORICAL_FACTORS, NUMERIC_FACTORS, motor_portfolio
from ratekeeper.validation import GATES, GateReport, render_html, run_gates
from ratekeeper.validation.report import TITLES

CHROMIUM = Path("/usr/bin/chromium")
VOID = {"meta", "br", "hr", "img", "input", "link"}


def gender_glm(train):
    """A frequency GLM that (wrongly) rates on gender as well."""
    factors = [*CATEGORICAL_FACTORS, "gender"]
    prepare = ColumnTransformer(
        [
            ("categorical", OneHotEncoder(drop="first"), factors),
            ("numeric", "passthrough", list(NUMERIC_FACTORS)),
        ]
    )
    model = Pipeline([("prepare", prepare), ("glm", PoissonRegressor(solver="newton-cholesky"))])
    rate = train["claim_count"] / train["exposure"]
    model.fit(train[[*factors, *NUMERIC_FACTORS]], rate, glm__sample_weight=train["exposure"])
    return model


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    book = motor_portfolio(9000, seed=21)
    train, holdout = book.iloc[:6000], book.iloc[6000:]
    registry = rk.Registry.create(tmp_path_factory.mktemp("report"), admin="modeller")[0]
    for model in (train_glm(train), gender_glm(train)):
        registry.register_model(model, "motor", training_data=train, exposure="exposure")
    champion, challenger = (registry.load_model(f"models:/motor/{v}") for v in (1, 2))
    compared = run_gates(challenger, champion, holdout, target="claim_count")
    first = run_gates(champion, None, holdout, target="claim_count")
    registry.close()
    return compared, first


def test_the_page_loads_nothing_from_outside(reports) -> None:
    for report in reports:
        page = render_html(report)
        assert "http://" not in page and "https://" not in page
        for pattern in (r"<script", r"<link", r"@import", r"url\(", r"\ssrc=", r"\shref="):
            assert re.search(pattern, page, re.IGNORECASE) is None, pattern
        assert page.startswith("<!DOCTYPE html>")
        assert '<meta charset="utf-8">' in page


def test_the_page_shows_every_gate_the_versions_and_the_verdict(reports) -> None:
    compared, first = reports
    page = render_html(compared)
    assert "Promotion gates — motor v2 vs champion v1" in page
    for result in compared.results:
        assert f"<code>{result.name}</code>" in page
        assert TITLES[result.name].replace("&", "&amp;") in page
    assert [r.name for r in compared.results] == list(GATES)
    assert not compared.passed  # v2 rates on gender
    assert '<span class="verdict FAIL" id="verdict">FAIL</span>' in page
    assert "blocked by: Prohibited rating factors" in page
    assert "uses prohibited rating factors: gender" in page
    assert f"{compared.holdout_rows:,} policies" in page
    assert f"version 2, {compared.challenger_digest}" in page
    assert f"version 1, {compared.champion_digest}" in page
    assert compared.holdout_sha256 in page
    first_page = render_html(first)
    assert "motor v1 vs champion none" in first_page
    assert "none (first promotion)" in first_page
    assert '<span class="verdict PASS" id="verdict">PASS</span>' in first_page


def test_the_page_draws_the_charts_as_inline_svg(reports) -> None:
    compared, first = reports
    page = render_html(compared)
    charts = re.findall(r'<svg class="chart".*?</svg>', page, re.DOTALL)
    titles = [re.search(r"<title>(.*?)</title>", c).group(1) for c in charts]
    assert titles == [
        "Lift: claim_count per unit of exposure, actual vs predicted",
        "Double lift: rates rebased to the actual total",
        "Premium change, challenger / champion − 1 (red: beyond ±10 %)",
        "Predicted rate: training profile vs holdout, share per frozen bin",
    ]
    lift, double, histogram, stability = charts
    assert lift.count("<polyline") == 3  # actual, challenger, champion
    assert lift.count("<circle") == 3 * len(compared.lift.actual)
    assert double.count("<polyline") == 3
    assert histogram.count('<rect class="bar"') == len(compared.dislocation.counts)
    assert stability.count('<rect class="bar"') == 2 * len(compared.stability.labels)
    first_charts = re.findall(r'<svg class="chart"', render_html(first))
    assert len(first_charts) == 2  # no double lift, no dislocation without a champion
    # The tables beside the charts: fairness, signature changes, PSI bins.
    assert "Fairness by gender" in page
    for group in compared.fairness.groups:
        assert f"<td>{group}</td>" in page
    assert "<td>gender</td><td>added</td>" in page
    for label in compared.stability.labels:
        assert label.replace(">", "&gt;") in page


def test_every_string_is_escaped(reports) -> None:
    compared, _ = reports
    hostile = '<script>alert("x")</script> & co'
    results = (replace(compared.results[0], detail=hostile), *compared.results[1:])
    page = render_html(replace(compared, model=hostile, results=results))
    assert "<script" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co" in page


class _Nesting(HTMLParser):
    """Checks that every element is closed, in order (void elements aside)."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.problems: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def test_the_page_is_well_nested_and_renders_the_same_from_stored_json(reports) -> None:
    for report in reports:
        page = render_html(report)
        checker = _Nesting()
        checker.feed(page)
        checker.close()
        assert checker.problems == []
        assert checker.stack == []
        assert render_html(GateReport.from_json(report.to_json())) == page


def test_a_real_headless_chromium_renders_the_report(reports, tmp_path) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: the browser check needs a system Chromium")
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("the Python playwright package is not installed (pip install playwright)")
    from playwright.sync_api import sync_playwright

    compared, _ = reports
    path = tmp_path / "report.html"
    path.write_text(render_html(compared), encoding="utf-8")
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = browser.new_page()
            page.on("request", lambda request: requests.append(request.url))
            page.goto(path.as_uri())
            assert page.title().startswith("Promotion gates — motor v2")
            assert page.locator("svg.chart").count() == 4
            assert page.locator("#verdict").inner_text() == "FAIL"
            box = page.locator("svg.chart").first.bounding_box()
            assert box is not None and box["width"] > 300 and box["height"] > 200
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
    assert requests == [path.as_uri()]  # the page itself, nothing else
    assert (tmp_path / "report.png").stat().st_size > 10_000
