"""The comparison of a rollout's champion and challenger, as data (JSON over HTTP) and as a
self-contained HTML page (``ratekeeper rollout report NAME -o report.html``).

Where each number comes from: the rollout's moves and the guards' snapshots that each serving
process writes every few seconds (quotes per arm, failures, pricing time, the premium-ratio
distribution and its segments by categorical rating factor), and, for conversion, the quote
ledger (each quote's arm) joined with the recorded outcomes.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from ratekeeper.errors import NotFoundError
from ratekeeper.rollouts.guarding import RATIO_EDGES
from ratekeeper.rollouts.outcomes import two_proportions

COUNTERS = (
    "champion_quotes",
    "challenger_quotes",
    "challenger_errors",
    "shadow_priced",
    "shadow_dropped",
    "compared",
    "moved",
)


def comparison(registry: Any, name: str, ledger_root: Path | None = None) -> dict[str, Any]:
    """Everything the report shows, JSON-ready."""
    rollout = registry.get_rollout(name)
    if rollout is None:
        raise NotFoundError(f"model {name!r} has had no rollout")
    events = registry.rollout_events(name)
    moves = [e for e in events if e["kind"] != "guards"]
    snapshots = [e for e in events if e["kind"] == "guards"]
    latest: dict[str, dict[str, Any]] = {}
    for event in snapshots:
        latest[event["actor"]] = event["detail"]
    totals = {key: sum(int(s.get(key) or 0) for s in latest.values()) for key in COUNTERS}
    histogram = [0] * (len(RATIO_EDGES) + 1)
    segments: dict[tuple[str, str], list[float]] = {}
    weighted = 0.0
    for snap in latest.values():
        for i, count in enumerate(snap.get("histogram") or []):
            histogram[i] += int(count)
        if snap.get("median_ratio") is not None:
            weighted += float(snap["median_ratio"]) * int(snap.get("compared") or 0)
        for seg in snap.get("segments") or []:
            cell = segments.setdefault((seg["field"], seg["level"]), [0, 0.0, 0])
            cell[0] += seg["n"]
            cell[1] += seg["mean_ratio"] * seg["n"]
            cell[2] += seg["moved"]
    priced = totals["challenger_quotes"] + totals["shadow_priced"]
    p99s = [s["p99_ms"] for s in latest.values() if s.get("p99_ms") is not None]
    return {
        "rollout": rollout.to_dict(),
        "moves": moves,
        "workers": sorted(latest),
        "arms": {
            "champion": {"version": rollout.champion_version, "quotes": totals["champion_quotes"]},
            "challenger": {
                "version": rollout.version,
                "quotes": totals["challenger_quotes"],
                "shadow_priced": totals["shadow_priced"],
                "shadow_dropped": totals["shadow_dropped"],
                "errors": totals["challenger_errors"],
                "error_rate": totals["challenger_errors"] / priced if priced else None,
                "p99_ms": max(p99s) if p99s else None,
            },
        },
        "premium_ratio": {
            "compared": totals["compared"],
            "moved": totals["moved"],
            "moved_share": totals["moved"] / totals["compared"] if totals["compared"] else None,
            "median": weighted / totals["compared"] if totals["compared"] else None,
            "histogram": {"edges": list(RATIO_EDGES), "counts": histogram},
            "segments": [
                {
                    "field": f,
                    "level": level,
                    "n": int(c[0]),
                    "mean_ratio": c[1] / c[0],
                    "moved_share": c[2] / c[0],
                }
                for (f, level), c in sorted(segments.items())
                if c[0]
            ],
        },
        "guards_over_time": [
            {
                "at": e["at"],
                "worker": e["actor"],
                "median_ratio": e["detail"].get("median_ratio"),
                "moved_share": (e["detail"]["moved"] / e["detail"]["compared"])
                if e["detail"].get("compared")
                else None,
                "p99_ms": e["detail"].get("p99_ms"),
            }
            for e in snapshots
        ],
        "conversion": _conversion(registry, rollout, ledger_root),
    }


def _conversion(registry: Any, rollout: Any, root: Path | None) -> dict[str, Any]:
    if root is None or not Path(root).is_dir():
        return {"available": False, "why": "no quote ledger here (conversion needs each arm)"}
    from ratekeeper.engine.ledger import read_ledger

    table = read_ledger(Path(root), model=rollout.name, since=rollout.started_at)
    if table.num_rows == 0:
        return {"available": False, "why": "the ledger holds no quote since the rollout began"}
    ids = table.column("quote_id").to_pylist()
    if "arm" in table.column_names:
        arms = table.column("arm").to_pylist()
    else:  # segments written before arms were recorded: the version tells
        arms = [
            "challenger" if v == rollout.version else "champion"
            for v in table.column("version").to_pylist()
        ]
    outcomes = registry.quote_outcomes(ids)
    counts = {"champion": [0, 0], "challenger": [0, 0]}
    premiums = {"champion": 0.0, "challenger": 0.0}
    for quote_id, arm in zip(ids, arms, strict=True):
        found = outcomes.get(quote_id)
        if found is None or arm not in counts:
            continue
        counts[arm][0] += 1
        counts[arm][1] += found[0]
        premiums[arm] += found[1] or 0.0
    test = two_proportions(
        counts["champion"][1],
        counts["champion"][0],
        counts["challenger"][1],
        counts["challenger"][0],
    )
    return {
        "available": True,
        "quotes": {arm: arms.count(arm) for arm in counts},
        "with_outcome": {arm: counts[arm][0] for arm in counts},
        "taken_up": {arm: counts[arm][1] for arm in counts},
        "written_premium": premiums,
        "test": test.to_dict(),
    }


# -- HTML ------------------------------------------------------------------------------------------
def render_html(data: dict[str, Any]) -> str:
    """The report as one HTML document (inline CSS and SVG, every value escaped)."""
    from ratekeeper.validation.charts import Series, bar_chart, line_chart
    from ratekeeper.validation.report import html_page, html_table, section

    rollout = data["rollout"]
    title = (
        f"Rollout — {rollout['name']} v{rollout['version']} against v{rollout['champion_version']}"
    )
    head = (
        f"<h1>{escape(title)}</h1><p>{escape(rollout['mode'])}, {escape(rollout['status'])}, "
        f"{rollout['percent']:g} % (live {rollout['live_percent']:g} %); started by "
        f"{escape(rollout['started_by'])} at {escape(rollout['started_at'])}"
        + (f"; {escape(str(rollout['reason']))}" if rollout["reason"] else "")
        + "</p>"
    )
    moves = html_table(
        ("at", "move", "by", "challenger's share", "detail"),
        [
            (
                escape(m["at"]),
                escape(m["kind"]),
                escape(m["actor"]),
                f"{m['percent']:g} %",
                escape(_detail(m["detail"])),
            )
            for m in data["moves"]
        ],
        numeric=(3,),
    )
    arms = data["arms"]
    challenger = arms["challenger"]
    arm_rows = [
        (
            "champion",
            str(arms["champion"]["version"]),
            f"{arms['champion']['quotes']:,}",
            "",
            "",
            "",
        ),
        (
            "challenger",
            str(challenger["version"]),
            f"{challenger['quotes']:,}",
            f"{challenger['shadow_priced']:,}",
            _pct(challenger["error_rate"]),
            _ms(challenger["p99_ms"]),
        ),
    ]
    arm_table = html_table(
        (
            "arm",
            "version",
            "quotes priced for customers",
            "priced in the background",
            "error rate",
            "p99 pricing time",
        ),
        arm_rows,
        numeric=(2, 3, 4, 5),
    )
    ratio = data["premium_ratio"]
    labels = _bin_labels(ratio["histogram"]["edges"])
    histogram = bar_chart(
        "Challenger / champion premium",
        labels,
        [Series("quotes", [float(c) for c in ratio["histogram"]["counts"]])],
        y_label="quotes",
        x_label="premium ratio",
    )
    summary = (
        f"<p>{ratio['compared']:,} quotes priced by both; median ratio "
        f"{_num(ratio['median'])}; {_pct(ratio['moved_share'])} moved beyond the guard.</p>"
    )
    segments = html_table(
        ("rating factor", "level", "quotes", "mean ratio", "moved"),
        [
            (
                escape(s["field"]),
                escape(s["level"]),
                f"{s['n']:,}",
                _num(s["mean_ratio"]),
                _pct(s["moved_share"]),
            )
            for s in ratio["segments"]
        ],
        numeric=(2, 3, 4),
    )
    over_time = data["guards_over_time"]
    trend = (
        line_chart(
            "Median premium ratio, snapshot by snapshot",
            [str(i + 1) for i in range(len(over_time))],
            [Series("median ratio", [p["median_ratio"] or 0.0 for p in over_time])],
            y_label="ratio",
            x_label="snapshot",
        )
        if over_time
        else "<p>No snapshot yet (each server writes one every few seconds).</p>"
    )
    body = [
        head,
        section("Moves", moves),
        section("Arms", arm_table),
        section("Premium ratio", summary + histogram + segments),
        section("Guards over time", trend),
        section("Conversion", _conversion_html(data["conversion"], html_table)),
    ]
    return html_page(title, body)


def _conversion_html(conversion: dict[str, Any], html_table: Any) -> str:
    if not conversion["available"]:
        return f"<p>Not available: {escape(conversion['why'])}.</p>"
    test = conversion["test"]
    rows = [
        (
            arm,
            f"{conversion['quotes'][arm]:,}",
            f"{conversion['with_outcome'][arm]:,}",
            f"{conversion['taken_up'][arm]:,}",
            _pct(test["p1" if arm == "champion" else "p2"]),
        )
        for arm in ("champion", "challenger")
    ]
    table = html_table(
        ("arm", "quotes", "with an outcome", "taken up", "conversion"), rows, numeric=(1, 2, 3, 4)
    )
    needed, still = (_count(test["needed_per_arm"]), _count(test["still_needed"]))
    verdict = (
        f"<p>Two-proportion z-test: z = {_num(test['z'])}, p = {_num(test['p_value'])}; quotes "
        f"with an outcome needed per arm for 5 % significance at 80 % power: {needed} "
        f"(still needed: {still}).</p>"
    )
    return str(table) + verdict


def _bin_labels(edges: Sequence[float]) -> list[str]:
    labels = [f"< {edges[0]:g}"]
    labels += [f"{a:g}–{b:g}" for a, b in itertools.pairwise(edges)]
    return [*labels, f"≥ {edges[-1]:g}"]


def _detail(detail: Any) -> str:
    if not isinstance(detail, dict):
        return ""
    return ", ".join(f"{k}: {v}" for k, v in sorted(detail.items()) if k not in ("guards",))


def _count(value: int | None) -> str:
    return f"{value:,}" if value is not None else "n/a (no difference yet)"


def _pct(value: float | None) -> str:
    return f"{value:.2%}" if value is not None else "–"


def _num(value: float | None) -> str:
    return f"{value:.4g}" if value is not None else "–"


def _ms(value: float | None) -> str:
    return f"{value:.2f} ms" if value is not None else "–"
