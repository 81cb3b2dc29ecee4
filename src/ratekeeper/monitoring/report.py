"""The drift and A/E reports: self-contained HTML pages, in the validation report's look.

Inline CSS and inline SVG only (no script, no stylesheet link, no font, no image file), so the
page reads the same offline and in an archive. Every string from the data is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from ratekeeper.monitoring.ae import AEGroup, AEReport
from ratekeeper.monitoring.drift import ALERT, STABLE, WARN, DriftReport, FactorDrift
from ratekeeper.validation.charts import Series, bar_chart, line_chart
from ratekeeper.validation.report import CSS, html_page, html_table, section
from ratekeeper.validation.stability import SHARE_FLOOR

BAND_CSS = {STABLE: "PASS", WARN: "WARN", ALERT: "FAIL"}
EXTRA_CSS = "tr.alert td { background: #fdecea; } tr.warn td { background: #fff4e5; }"


def render_drift_html(report: DriftReport) -> str:
    """The whole report as one HTML document (a string; write it with UTF-8)."""
    title = f"Drift — {report.model} v{report.version}"
    body = [
        _header(report, title),
        section("Population stability", _summary_table(report)),
        *(_factor_section(d) for d in report.all),
        section("Method", _method(report)),
    ]
    return page(title, body)


def page(title: str, body: Sequence[str]) -> str:
    return html_page(title, body, css=CSS + EXTRA_CSS)


def verdict(status: str) -> str:
    return f'<span class="verdict {BAND_CSS[status]}">{escape(status.upper())}</span>'


def _header(report: DriftReport, title: str) -> str:
    weight = f"exposure ({report.exposure})" if report.weight == "exposure" else "policies (count)"
    facts = [
        ("model version", f"{report.model} v{report.version}"),
        ("rows in the data", f"{report.rows:,}"),
        ("shares weighted by", weight),
        ("bands", f"stable < {report.bands.warn:g} ≤ warn < {report.bands.alert:g} ≤ alert"),
        ("rows left out of the prediction PSI", _exclusions(report)),
        ("computed at", report.created_at),
    ]
    rows = [(escape(k), escape(v)) for k, v in facts]
    notes = "".join(f'<p class="muted">{escape(n)}</p>' for n in report.notes)
    return (
        f"<h1>{escape(title)}</h1>"
        f'<p id="status">{verdict(report.status)}</p>'
        + html_table(("", ""), rows, header=False)
        + notes
    )


def _exclusions(report: DriftReport) -> str:
    if not report.excluded_rows:
        return "none"
    reasons = ", ".join(f"{k} ({v:,})" for k, v in report.exclusions.items())
    return f"{report.excluded_rows:,}: {reasons}"


def _summary_table(report: DriftReport) -> str:
    rows = []
    classes = []
    for d in report.all:
        rows.append(
            (
                escape(d.name),
                escape(d.kind),
                f"{d.psi:.4f}",
                verdict(d.band),
                f"{d.rows:,}",
                f"{d.sample_size:,.0f}",
                f"{d.total_weight:,.1f}",
                f"{d.stability.statistic:.4g} on {d.stability.degrees_of_freedom}",
                f"{d.p_value:.3g}",
            )
        )
        classes.append(d.band)
    headers = ("factor", "kind", "PSI", "band", "rows", "sample size", "weight", "χ²", "p")
    return html_table(headers, rows, numeric=(2, 4, 5, 6, 7, 8), row_classes=classes)


def _factor_section(d: FactorDrift) -> str:
    s = d.stability
    labels = list(s.labels)
    chart = bar_chart(
        f"{d.name}: share per reference bin",
        labels,
        [Series("reference", list(s.expected)), Series("current", list(s.actual))],
        y_label="share",
        x_label="reference bin" if d.kind != "categorical" else "level",
    )
    rows = [
        (escape(label), f"{e:.2%}", f"{a:.2%}", f"{_contribution(e, a):.4f}")
        for label, e, a in zip(labels, s.expected, s.actual, strict=True)
    ]
    detail = html_table(("bin", "reference", "current", "PSI term"), rows, numeric=(1, 2, 3))
    head = f"<p>PSI {d.psi:.4f} {verdict(d.band)} &nbsp; χ² p = {d.p_value:.3g}</p>"
    return (
        f'<section id="factor-{escape(d.name)}"><h2>{escape(d.name)}</h2>'
        f"{head}{chart}{detail}</section>"
    )


def _contribution(expected: float, actual: float) -> float:
    e, a = max(expected, SHARE_FLOOR), max(actual, SHARE_FLOOR)
    return (a - e) * math.log(a / e)


def _method(report: DriftReport) -> str:
    return (
        "<p>Each factor is counted into the bins frozen in the version's reference profile "
        "(never re-binned from these data). PSI = Σ (current − reference) × ln(current / "
        f"reference) over the bins, with both shares floored at {SHARE_FLOOR:g} so that an "
        "empty bin stays finite. The chi-square test asks whether the current shares could be "
        "a sample of the reference ones (n = the effective sample size); on a large book it "
        "flags immaterial shifts, so read it beside the PSI. Factor PSIs use every row "
        "(missing values in the missing bin, unseen levels in <em>other</em>); the prediction "
        "PSI uses the rows that pass the model's signature, scored as the rate per unit of "
        "exposure.</p>"
    )


def render_ae_html(report: AEReport) -> str:
    """Actual vs expected as one HTML document: the overall ratio, then one chart per factor."""
    title = f"Actual vs expected — {report.model} v{report.version}"
    facts = [
        ("model version", f"{report.model} v{report.version}"),
        ("actual", f"{report.actual_column} ({report.kind})"),
        ("expected", "the model's prediction" + (" × exposure" if report.exposure else "")),
        ("interval", f"{report.level:.0%} {report.interval}"),
        ("rows", f"{report.rows:,} ({report.excluded_rows:,} left out)"),
        ("computed at", report.created_at),
    ]
    body = [
        f"<h1>{escape(title)}</h1>",
        html_table(("", ""), [(escape(k), escape(v)) for k, v in facts], header=False),
        *(f'<p class="muted">{escape(n)}</p>' for n in report.notes),
        section("Overall", _ae_table([report.overall])),
    ]
    for name, groups in report.by.items():
        labels = [g.level for g in groups]
        chart = line_chart(
            f"A/E by {name}",
            labels,
            [
                Series("A/E", [_finite(g.ratio) for g in groups]),
                Series("lower", [_finite(g.lower) for g in groups], dashed=True),
                Series("upper", [_finite(g.upper) for g in groups], dashed=True),
            ],
            y_label="actual / expected",
            x_label=name,
        )
        body.append(section(f"By {name}", chart + _ae_table(groups)))
    return page(title, body)


def _ae_table(groups: Sequence[AEGroup]) -> str:
    rows = [
        (
            escape(g.level),
            f"{g.rows:,}",
            f"{g.exposure:,.1f}",
            f"{g.actual:,.6g}",
            f"{g.expected:,.6g}",
            f"{g.ratio:.3f}",
            f"{g.lower:.3f} – {g.upper:.3f}",
        )
        for g in groups
    ]
    headers = ("level", "rows", "exposure", "actual", "expected", "A/E", "interval")
    return html_table(headers, rows, numeric=(1, 2, 3, 4, 5, 6))


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0
