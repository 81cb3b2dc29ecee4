"""The validation report: one self-contained HTML page a reviewer reads before approving.

No script, no stylesheet link, no web font, no image file: inline CSS and inline SVG only, so
the page is the same offline, in an archive, and in ten years. Every string from the report is
escaped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from html import escape

from ratekeeper.validation.charts import Series, bar_chart, line_chart
from ratekeeper.validation.dislocation import histogram_labels
from ratekeeper.validation.gate_report import FAIL, NOT_APPLICABLE, PASS, GateReport, GateResult

TITLES = {
    "signature_compatibility": "Signature compatibility",
    "prohibited_factors": "Prohibited rating factors",
    "deviance": "Deviance vs champion",
    "gini": "Gini vs champion",
    "lift": "Lift",
    "double_lift": "Double lift",
    "dislocation_10": "Dislocation beyond ±10 %",
    "dislocation_25": "Dislocation beyond ±25 %",
    "stability": "Stability (PSI of the predicted rate)",
    "fairness": "Fairness (average premium by protected group)",
}

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1b1b1b;
  margin: 2rem auto; max-width: 1040px; padding: 0 1rem; }
h1 { font-size: 1.5rem; margin-bottom: .25rem; } h2 { font-size: 1.15rem; margin-top: 2rem;
  border-bottom: 1px solid #ccc; padding-bottom: .2rem; }
table { border-collapse: collapse; margin: .5rem 0; } th, td { border: 1px solid #d0d0d0;
  padding: .3rem .55rem; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font-size: .85em; color: #555; }
.verdict { display: inline-block; padding: .3rem .9rem; border-radius: 4px; color: #fff;
  font-weight: 700; letter-spacing: .05em; }
.PASS { background: #2e7d32; } .FAIL { background: #c62828; } .WARN { background: #ef6c00; }
.NA { background: #757575; } td .verdict { padding: .1rem .5rem; font-size: .8rem; }
.muted { color: #666; }
svg.chart { display: block; margin: .5rem 0; max-width: 100%; height: auto; }
svg .grid { stroke: #e3e3e3; } svg .axis { stroke: #555; }
svg text { font: 11px system-ui, sans-serif; fill: #333; }
svg .chart-title { font-size: 13px; font-weight: 600; }
"""


def render_html(report: GateReport) -> str:
    """The whole report as one HTML document (a string; write it with UTF-8)."""
    champion = f"v{report.champion_version}" if report.champion_version is not None else "none"
    title = f"Promotion gates — {report.model} v{report.challenger_version} vs champion {champion}"
    body = [
        _header(report, title),
        section("Gates", _gate_table(report.results)),
        _lift_section(report),
        _double_lift_section(report),
        _dislocation_section(report),
        _fairness_section(report),
        _signature_section(report),
        _stability_section(report),
        section("Gate policy in force", _policy_table(report)),
    ]
    return html_page(title, body)


def html_page(title: str, body: Sequence[str], css: str = CSS) -> str:
    """One self-contained HTML document: the style inline, the sections in order."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{css}</style></head><body>"
        + "".join(body)
        + "</body></html>\n"
    )


def _header(report: GateReport, title: str) -> str:
    verdict = PASS if report.passed else FAIL
    champion = (
        f"version {report.champion_version}, {report.champion_digest}"
        if report.champion_version is not None
        else "none (first promotion)"
    )
    family = report.family + (f" (power {report.power:g})" if report.power is not None else "")
    facts = [
        ("model", report.model),
        ("challenger", f"version {report.challenger_version}, {report.challenger_digest}"),
        ("champion (Production)", champion),
        ("holdout", f"{report.holdout_rows:,} policies, {report.holdout_exposure:,.1f} exposure"),
        ("left out of the holdout", _excluded(report)),
        ("holdout content SHA-256", report.holdout_sha256),
        ("target / exposure", f"{report.target} / {report.exposure or '(none: 1 per policy)'}"),
        ("deviance family", family),
        ("gates run at", report.created_at),
    ]
    failures = ", ".join(TITLES.get(r.name, r.name) for r in report.failures)
    summary = f"blocked by: {failures}" if failures else "no blocking gate failed"
    return (
        f"<h1>{escape(title)}</h1>"
        f'<p><span class="verdict {verdict}" id="verdict">{verdict}</span> '
        f'<span class="muted">{escape(summary)}</span></p>'
        + html_table(("", ""), [(escape(k), escape(v)) for k, v in facts], header=False)
    )


def _gate_table(results: Sequence[GateResult]) -> str:
    rows = []
    for r in results:
        status = r.status
        css = "NA" if status == NOT_APPLICABLE else status
        blocking = "" if r.blocking else '<br><span class="muted">report only</span>'
        rows.append(
            (
                f"{escape(TITLES.get(r.name, r.name))}<br><code>{escape(r.name)}</code>",
                f'<span class="verdict {css}">{escape(status)}</span>{blocking}',
                _value(r.name, r.value),
                _value(r.name, r.threshold),
                escape(r.detail),
            )
        )
    return html_table(("gate", "result", "value", "threshold", "detail"), rows, numeric=(2, 3))


def _lift_section(report: GateReport) -> str:
    lift = report.lift
    deciles = [str(i + 1) for i in range(len(lift.actual))]
    series = [Series("actual", lift.actual), Series("challenger", lift.predicted)]
    if report.champion_lift is not None:
        series.append(Series("champion", report.champion_lift.predicted, dashed=True))
    chart = line_chart(
        f"Lift: {report.target} per unit of exposure, actual vs predicted",
        deciles,
        series,
        y_label="rate per unit of exposure",
        x_label="equal-exposure bin of the challenger's predicted rate (lowest first)",
    )
    rows = [
        (d, _num(e, ",.1f"), _num(a, ".4g"), _num(p, ".4g"))
        for d, e, a, p in zip(deciles, lift.exposure, lift.actual, lift.predicted, strict=True)
    ]
    headers = ("bin", "exposure", "actual rate", "predicted rate")
    table = html_table(headers, rows, numeric=(1, 2, 3))
    return section("Lift", chart + table)


def _double_lift_section(report: GateReport) -> str:
    double = report.double_lift
    if double is None:
        return section("Double lift", _na())
    bins = [str(i + 1) for i in range(len(double.actual))]
    chart = line_chart(
        "Double lift: rates rebased to the actual total",
        bins,
        [
            Series("actual", double.actual),
            Series("challenger", double.challenger),
            Series("champion", double.champion, dashed=True),
        ],
        y_label="rate per unit of exposure",
        x_label="equal-exposure bin of the challenger / champion ratio (lowest first)",
    )
    rows = [
        (b, _num(r, ".3f"), _num(e, ",.1f"), _num(a, ".4g"), _num(h, ".4g"), _num(c, ".4g"))
        for b, r, e, a, h, c in zip(
            bins,
            double.ratio,
            double.exposure,
            double.actual,
            double.champion,
            double.challenger,
            strict=True,
        )
    ]
    table = html_table(
        ("bin", "challenger / champion", "exposure", "actual", "champion", "challenger"),
        rows,
        numeric=(1, 2, 3, 4, 5),
    )
    return section("Double lift", chart + table)


def _dislocation_section(report: GateReport) -> str:
    moves = report.dislocation
    if moves is None:
        return section("Dislocation", _na())
    labels = histogram_labels(moves.edges)
    lows, highs = (-math.inf, *moves.edges), (*moves.edges, math.inf)
    beyond = [lo >= 0.1 - 1e-9 or hi <= -0.1 + 1e-9 for lo, hi in zip(lows, highs, strict=True)]
    chart = bar_chart(
        "Premium change, challenger / champion − 1 (red: beyond ±10 %)",
        labels,
        [Series("policies", [float(c) for c in moves.counts])],
        y_label="policies",
        x_label="change in premium",
        highlight=beyond,
    )
    summary = html_table(
        ("", "up", "down", "either way"),
        [
            (f"beyond ±{cap:.0%}", _pct(u), _pct(d), _pct(u + d))
            for cap, u, d in zip(moves.caps, moves.up, moves.down, strict=True)
        ],
        numeric=(1, 2, 3),
    )
    worst = html_table(
        ("rating factor", "level", "policies", "exposure", "mean change"),
        [
            (
                escape(s.factor),
                escape(s.level),
                f"{s.policies:,}",
                _num(s.exposure, ",.1f"),
                _signed_pct(s.mean_change),
            )
            for s in moves.worst
        ],
        numeric=(2, 3, 4),
    )
    text = (
        f"<p>{moves.policies:,} policies; mean change {_signed_pct(moves.mean_change)} "
        f"(exposure-weighted), whole book {_signed_pct(moves.total_change)}.</p>"
    )
    return section(
        "Dislocation", text + chart + summary + "<h3>Segments that move most</h3>" + worst
    )


def _fairness_section(report: GateReport) -> str:
    table = report.fairness
    if table is None:
        return section("Fairness", _na("the holdout has no protected attribute"))
    rows = [
        (escape(g), f"{p:,}", _num(e, ",.1f"), _num(a, ",.4g"))
        for g, p, e, a in zip(
            table.groups, table.policies, table.exposure, table.average_premium, strict=True
        )
    ]
    ratio = f"{table.ratio:.3f}" if table.ratio is not None else "—"
    return section(
        f"Fairness by {table.attribute}",
        html_table(("group", "policies", "exposure", "average premium"), rows, numeric=(1, 2, 3))
        + f"<p>highest / lowest average premium: <b>{escape(ratio)}</b> "
        f"(threshold {report.policy.fairness_threshold:.2f}, "
        f"{'blocking' if report.policy.fairness_blocks else 'report only'})</p>",
    )


def _signature_section(report: GateReport) -> str:
    changes = report.signature_changes
    if changes is None:
        return section("Signature changes", _na())
    if not changes.changes:
        return section("Signature changes", "<p>None: quote clients need no change.</p>")
    rows = [
        (
            escape(c.field),
            escape(c.change.replace("_", " ")),
            escape(c.before or "—"),
            escape(c.after or "—"),
            "<b>yes</b>" if c.breaking else "no",
        )
        for c in changes.changes
    ]
    return section(
        "Signature changes (what quote clients must change)",
        html_table(("field", "change", "champion", "challenger", "breaking"), rows),
    )


def _stability_section(report: GateReport) -> str:
    s = report.stability
    chart = bar_chart(
        "Predicted rate: training profile vs holdout, share per frozen bin",
        s.labels,
        [Series("training (reference)", s.expected), Series("holdout", s.actual)],
        y_label="share of exposure",
        x_label="bin of the predicted rate, frozen at registration",
    )
    rows = [
        (escape(label), _pct(e), _pct(a))
        for label, e, a in zip(s.labels, s.expected, s.actual, strict=True)
    ]
    text = (
        f"<p>PSI {s.psi:.4f}; chi-square {s.statistic:.4g} on {s.degrees_of_freedom} degrees "
        f"of freedom, p = {s.p_value:.3g}. Shares are floored at 0.01 % in the PSI.</p>"
    )
    table = html_table(("bin", "training", "holdout"), rows, numeric=(1, 2))
    return section("Stability of the predicted rate (PSI bins)", text + chart + table)


def _policy_table(report: GateReport) -> str:
    rows = []
    for key, value in report.policy.to_dict().items():
        shown = ", ".join(value) if isinstance(value, list) else str(value)
        rows.append((f"<code>{escape(key)}</code>", escape(shown)))
    return html_table(("setting", "value"), rows)


def _excluded(report: GateReport) -> str:
    if not report.excluded_rows:
        return "none: both models price every policy"
    return f"{report.excluded_rows:,} policies: {report.excluded_reason}"


# -- small pieces ------------------------------------------------------------------------------
def section(title: str, content: str) -> str:
    return f"<section><h2>{escape(title)}</h2>{content}</section>"


def _na(reason: str = "there is no champion to compare with") -> str:
    return f'<p class="muted">Not applicable: {escape(reason)}.</p>'


def html_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    numeric: Sequence[int] = (),
    header: bool = True,
    row_classes: Sequence[str] | None = None,
) -> str:
    """Cells are HTML already (escaped by the caller); headers are escaped here. ``numeric``:
    the columns aligned as numbers; ``row_classes``: a CSS class per row."""
    head = "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in headers) + "</tr>" if header else ""
    body = []
    for i, row in enumerate(rows):
        css = f' class="{row_classes[i]}"' if row_classes is not None else ""
        cells = "".join(
            f'<td class="num">{cell}</td>' if j in numeric else f"<td>{cell}</td>"
            for j, cell in enumerate(row)
        )
        body.append(f"<tr{css}>{cells}</tr>")
    return f"<table>{head}{''.join(body)}</table>"


def _value(gate: str, value: float | None) -> str:
    if value is None:
        return "—"
    format_: Callable[[float], str] = VALUE_FORMATS.get(gate, lambda v: f"{v:.4g}")
    return escape(format_(value))


def _num(value: float, spec: str) -> str:
    return escape(format(value, spec))


def _pct(value: float) -> str:
    return f"{value:.1%}"


def _signed_pct(value: float) -> str:
    return f"{value:+.1%}"


VALUE_FORMATS: dict[str, Callable[[float], str]] = {
    "signature_compatibility": lambda v: f"{v:.0f} breaking",
    "prohibited_factors": lambda v: f"{v:.0f}",
    "deviance": lambda v: f"{v:+.2%}",
    "gini": lambda v: f"{v:+.4f}",
    "lift": lambda v: f"{v:.2f}×",
    "double_lift": lambda v: f"{v:+.2%}",
    "dislocation_10": _pct,
    "dislocation_25": _pct,
    "stability": lambda v: f"{v:.4f}",
    "fairness": lambda v: f"{v:.3f}",
}
