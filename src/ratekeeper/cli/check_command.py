"""``ratekeeper check``: the promotion gates as a CI step, without filing a request.

Exit status: 0 when every blocking gate passes, 1 when one fails, 2 for a usage error or bad
input, and the CLI's other codes (3 not found, 5 permission denied, ...) as for every command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ratekeeper.cli.output import console, table


@click.command()
@click.argument("model_uri", metavar="MODEL_URI")
@click.option(
    "--holdout",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="Holdout policies with observed claims (Parquet or CSV).",
)
@click.option(
    "--against",
    default="Production",
    show_default=True,
    help="What the candidate is compared with: a stage, @alias, a version number or a model URI.",
)
@click.option("--target", help="The holdout's observed column [default: the version's target].")
@click.option("--protected", help="A column the fairness indicator groups by (e.g. gender).")
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("gate-report.html"),
    show_default=True,
    help="Where to write the validation report (HTML).",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the gate report as JSON (GateReport.to_json).",
)
@click.pass_context
def check(
    ctx: click.Context,
    model_uri: str,
    holdout: Path,
    against: str,
    target: str | None,
    protected: str | None,
    report_path: Path,
    json_path: Path | None,
) -> None:
    """Run the promotion gates of MODEL_URI (models:/NAME/3, models:/NAME@challenger) on a
    holdout, write the validation report, and exit 0 when they pass, 1 when they fail.

    Files no request and writes nothing in the registry: a read credential is enough.
    """
    from ratekeeper.cli.governance_commands import read_table
    from ratekeeper.validation.report import render_html

    registry: Any = ctx.obj.registry
    report = registry.check_promotion(
        model_uri, read_table(holdout), against=against, target=target, protected=protected
    )
    table(
        f"{report.model} version {report.challenger_version} against "
        + (f"version {report.champion_version}" if report.champion_version else "no champion"),
        ("gate", "status", "detail"),
        ((r.name, r.status, r.detail) for r in report.results),
    )
    report_path.write_text(render_html(report), encoding="utf-8")
    if json_path is not None:
        json_path.write_text(report.to_json(), encoding="utf-8")
    verdict = "gates passed" if report.passed else "GATES FAILED"
    console.print(f"{verdict}; validation report: {report_path}", markup=False, highlight=False)
    if not report.passed:
        ctx.exit(1)
