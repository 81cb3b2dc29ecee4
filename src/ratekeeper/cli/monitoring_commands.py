"""``drift`` and ``ae``: population stability and actual vs expected, from the command line.

``ratekeeper drift`` exits 0 (stable), 1 (warn) or 2 (alert) so that a scheduler can act on it,
and 3 (insufficient) when it holds fewer policies than ``--min-rows`` and judges nothing.
Its own failures therefore exit with **10 + the usual code** (12 invalid input or a bad option,
13 model not found, 14–16 as usual, 11 anything else such as an unreadable file): an error is
never mistaken for an alert. ``ae`` exits 0, or with the usual codes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.table import Table

from ratekeeper.cli.output import console
from ratekeeper.engine import ledger as quote_ledger
from ratekeeper.engine.ledger import parse_since
from ratekeeper.errors import InvalidInputError, RatekeeperError
from ratekeeper.monitoring.drift import EXIT_CODES as DRIFT_EXIT_CODES
from ratekeeper.monitoring.drift import INSUFFICIENT, MIN_SAMPLE
from ratekeeper.packaging.signature import CATEGORICAL, Signature

FAILURE_BASE = 10
BAND_STYLE = {"stable": "green", "warn": "yellow", "alert": "bold red"}


class Failure(click.ClickException):
    """A failure of a monitoring command, with its own exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click declares it on the class


class DriftCommand(click.Command):
    """A command whose failures exit with 10 + the usual code (bad options included)."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.ClickException as exc:  # a usage error would otherwise exit 2 (= alert)
            raise Failure(exc.format_message(), FAILURE_BASE + exc.exit_code) from None

    def invoke(self, ctx: click.Context) -> Any:
        from ratekeeper.cli.main import EXIT_CODES

        try:
            return super().invoke(ctx)
        except RatekeeperError as exc:
            raise Failure(exc.message, FAILURE_BASE + EXIT_CODES.get(exc.code, 1)) from None
        except OSError as exc:
            raise Failure(str(exc), FAILURE_BASE + 1) from None


# -- drift -------------------------------------------------------------------------------------
@click.command(cls=DriftCommand)
@click.argument("model_uri")
@click.option("--data", "data_path", type=click.Path(path_type=Path), help="Parquet or CSV file.")
@click.option("--ledger", "from_ledger", is_flag=True, help="Read the quotes from the ledger.")
@click.option("--since", metavar="AGE", help="With --ledger: quotes of the last 30m, 24h, 7d…")
@click.option(
    "--ledger-dir",
    metavar="PATH",
    help="With --ledger: the ledger folder or s3://bucket/prefix/ledger [default: "
    "$RATEKEEPER_LEDGER, else by the registry; with the artifacts on S3, their ledger/ too].",
)
@click.option("--exposure", metavar="COL", help="Exposure column [default: the signature's].")
@click.option("--warn", default=0.10, show_default=True, help="PSI from which a factor warns.")
@click.option("--alert", default=0.25, show_default=True, help="PSI from which it alerts.")
@click.option(
    "--min-rows",
    default=MIN_SAMPLE,
    show_default=True,
    type=click.IntRange(min=1),
    help="Fewer rows (or quotes) than this: no PSI, exit 3 (it would be noise).",
)
@click.option("--report", "report_path", type=click.Path(path_type=Path), help="Write HTML here.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def drift(
    ctx: click.Context,
    model_uri: str,
    data_path: Path | None,
    from_ledger: bool,
    since: str | None,
    ledger_dir: str | None,
    exposure: str | None,
    warn: float,
    alert: float,
    min_rows: int,
    report_path: Path | None,
    as_json: bool,
) -> None:
    """PSI per rating factor and for the prediction against the version's reference profile.

    Exit code: 0 stable, 1 warn, 2 alert; 3 insufficient (fewer rows or quotes than
    --min-rows: nothing judged); 11-16 when the command itself fails.
    """
    from ratekeeper.monitoring.drift import Bands
    from ratekeeper.monitoring.drift import drift as compute_drift
    from ratekeeper.monitoring.report import render_drift_html

    bands = Bands(warn, alert)
    scorer = ctx.obj.registry.load_model(model_uri)
    if from_ledger:
        if data_path is not None:
            raise InvalidInputError("give either --data or --ledger, not both")
        data = read_from_ledger(ctx.obj, scorer.name, scorer.version, since, ledger_dir)
    else:
        if data_path is None:
            raise InvalidInputError("give --data PATH (or --ledger)")
        if since is not None or ledger_dir is not None:
            raise InvalidInputError("--since and --ledger-dir go with --ledger")
        data = _read(data_path, scorer.signature, [exposure] if exposure else [])
    if data.num_rows < min_rows:
        what = (f"quotes in the last {since}" if since else "quotes") if from_ledger else "rows"
        _not_judged(ctx, scorer, what, data.num_rows, min_rows, report_path, as_json)
    report = compute_drift(scorer, data, exposure=exposure, bands=bands)
    if report_path is not None:
        report_path.write_text(render_drift_html(report), encoding="utf-8")
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        _print_drift(report)
        if report_path is not None:
            console.print(f"report written to {report_path}", markup=False, highlight=False)
    ctx.exit(report.exit_code)


def _not_judged(
    ctx: click.Context,
    scorer: Any,
    what: str,
    rows: int,
    min_rows: int,
    report_path: Path | None,
    as_json: bool,
) -> NoReturn:
    """Too few policies for a PSI that means anything: say so, write no report, exit 3."""
    message = f"not enough {what} ({rows:,} of at least {min_rows:,}): drift not judged"
    if as_json:
        body = {
            "model": scorer.name,
            "version": scorer.version,
            "status": INSUFFICIENT,
            "rows": rows,
            "min_rows": min_rows,
            "message": message,
        }
        click.echo(json.dumps(body, indent=2))
    else:
        console.print(
            f"Drift — {scorer.name} v{scorer.version}: {INSUFFICIENT.upper()}: {message}",
            markup=False,
            highlight=False,
        )
        if report_path is not None:
            console.print(f"no report written to {report_path}", markup=False, highlight=False)
    ctx.exit(DRIFT_EXIT_CODES[INSUFFICIENT])


def _print_drift(report: Any) -> None:
    out = Table(
        title=f"Drift — {report.model} v{report.version}: {report.status.upper()} "
        f"({report.rows:,} rows, shares of {report.weight})",
        title_justify="left",
        header_style="bold",
    )
    for header in ("factor", "kind", "PSI", "band", "rows", "sample size", "χ² p-value"):
        out.add_column(header, justify="left" if header in ("factor", "kind", "band") else "right")
    for d in report.all:
        style = BAND_STYLE[d.band]
        out.add_row(
            d.name,
            d.kind,
            f"{d.psi:.4f}",
            f"[{style}]{d.band}[/{style}]",
            f"{d.rows:,}",
            f"{d.sample_size:,.0f}",
            f"{d.p_value:.3g}",
        )
    console.print(out)
    for note in report.notes:
        console.print(f"note: {note}", markup=False, highlight=False)


# -- ae --------------------------------------------------------------------------------------
@click.command()
@click.argument("model_uri")
@click.option("--data", "data_path", required=True, type=click.Path(path_type=Path))
@click.option("--actual", required=True, metavar="COL", help="Observed claim counts or costs.")
@click.option("--exposure", metavar="COL", help="Exposure column [default: the signature's].")
@click.option("--by", multiple=True, metavar="FACTOR", help="Rating factor(s) [default: all].")
@click.option("--level", default=0.95, show_default=True, help="Confidence level.")
@click.option("--report", "report_path", type=click.Path(path_type=Path), help="Write HTML here.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_obj
def ae(
    obj: Any,
    model_uri: str,
    data_path: Path,
    actual: str,
    exposure: str | None,
    by: tuple[str, ...],
    level: float,
    report_path: Path | None,
    as_json: bool,
) -> None:
    """Actual vs expected: observed claims against the model's prediction, with intervals."""
    from ratekeeper.monitoring.ae import actual_vs_expected
    from ratekeeper.monitoring.report import render_ae_html

    scorer = obj.registry.load_model(model_uri)
    extra = [actual, *([exposure] if exposure else [])]
    data = _read(data_path, scorer.signature, extra)
    report = actual_vs_expected(
        scorer, data, actual=actual, exposure=exposure, by=by or None, level=level
    )
    if report_path is not None:
        report_path.write_text(render_ae_html(report), encoding="utf-8")
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    console.print(
        f"A/E — {report.model} v{report.version}: {report.actual_column} ({report.kind}, "
        f"{report.level:.0%} {report.interval} interval)",
        markup=False,
        highlight=False,
    )
    _print_groups("overall", "", [report.overall])
    for name, groups in report.by.items():
        _print_groups(f"by {name}", name, groups)
    for note in report.notes:
        console.print(f"note: {note}", markup=False, highlight=False)
    if report_path is not None:
        console.print(f"report written to {report_path}", markup=False, highlight=False)


def _print_groups(title: str, name: str, groups: Any) -> None:
    out = Table(title=title, title_justify="left", header_style="bold")
    out.add_column(name or "")
    for header in ("rows", "exposure", "actual", "expected", "A/E", "lower", "upper"):
        out.add_column(header, justify="right")
    for g in groups:
        out.add_row(
            g.level,
            f"{g.rows:,}",
            f"{g.exposure:,.1f}",
            f"{g.actual:,.6g}",
            f"{g.expected:,.6g}",
            f"{g.ratio:.3f}",
            f"{g.lower:.3f}",
            f"{g.upper:.3f}",
        )
    console.print(out)


# -- reading the data --------------------------------------------------------------------------
def _read(path: Path, signature: Signature, extra: list[str]) -> Any:
    """The columns the model needs (and ``extra``), nothing else; categorical ones as text."""
    from ratekeeper.monitoring.columns import read_columns

    text = [f.name for f in signature.fields if f.kind == CATEGORICAL]
    return read_columns(path, [*signature.names, *extra], text)


# The hook for ``--ledger``: quotes recorded by the rating engine for the model version.
def read_from_ledger(
    obj: Any, model: str, version: int, since: str | None, ledger_dir: str | None
) -> Any:
    """The validated rating factors of the version's recorded quotes, one column each."""
    from ratekeeper.cli.ledger_commands import ledger_source

    moment = parse_since(since) if since is not None else None
    with ledger_source(obj, ledger_dir, model=model, version=version, since=moment) as root:
        table = quote_ledger.read_ledger(root, model=model, version=version, since=moment)
    return quote_ledger.inputs_table(table)


COMMANDS: list[click.Command] = [drift, ae]
