"""``ratekeeper rollout``: start, status, pause, resume, abort, complete, report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ratekeeper.cli.output import console, pairs, table
from ratekeeper.rollouts.plan import format_duration


@click.group()
def rollout() -> None:
    """Release a version beside the Production one: shadow, canary or staged (blue/green)."""


@rollout.command()
@click.argument("name")
@click.argument("version", type=int)
@click.option("--mode", type=click.Choice(["shadow", "canary", "staged"]), required=True)
@click.option(
    "--percent", type=float, help="canary: share of policies [10]; shadow: share priced [100]."
)
@click.option("--steps", help="staged: traffic steps in % [default: 1,10,50,100].")
@click.option("--bake", help="staged: how long each step is held, e.g. 90s, 10m, 2h [10m].")
@click.option("--key", metavar="FIELD", help="The policy field the split is sticky by.")
@click.option("--comment", "-m", help="Why (kept in the audit trail).")
@click.pass_obj
def start(
    obj: Any,
    name: str,
    version: int,
    mode: str,
    percent: float | None,
    steps: str | None,
    bake: str | None,
    key: str | None,
    comment: str | None,
) -> None:
    """Start a rollout of VERSION of model NAME (canary and staged: under an approved request
    that carried the same plan)."""
    started = obj.registry.start_rollout(
        name, version, mode=mode, percent=percent, steps=steps, bake=bake, key=key, comment=comment
    )
    console.print(
        f"rollout {started.id}: {name} version {version} {started.plan.describe()} against "
        f"version {started.champion_version}"
    )


@rollout.command()
@click.argument("name")
@click.pass_obj
def status(obj: Any, name: str) -> None:
    """The model's running (else last) rollout."""
    found = obj.registry.get_rollout(name)
    if found is None:
        console.print(f"{name} has had no rollout")
        return
    pairs(
        f"rollout {found.id} of {name}",
        [
            ("challenger", found.version),
            ("champion", found.champion_version),
            ("mode", found.mode),
            ("status", found.status),
            ("share", f"{found.percent:g} % (live {found.live_percent:g} %)"),
            ("steps", ", ".join(f"{s:g}" for s in found.steps) or None),
            ("bake", format_duration(found.bake_seconds) if found.bake_seconds else None),
            ("next step", found.next_step_at()),
            ("key", found.key),
            ("request", found.request_id),
            ("started", f"{found.started_at:%Y-%m-%d %H:%M:%S} by {found.started_by}"),
            ("ended", found.ended_at),
            ("reason", found.reason),
        ],
    )
    moves = [e for e in obj.registry.rollout_events(name) if e["kind"] != "guards"]
    table(
        None,
        ("at", "move", "by", "share"),
        [(e["at"], e["kind"], e["actor"], e["percent"]) for e in moves],
    )


@rollout.command()
@click.argument("name")
@click.option("--comment", "-m", help="Why.")
@click.pass_obj
def pause(obj: Any, name: str, comment: str | None) -> None:
    """Send the challenger no quotes until resumed."""
    console.print(_line(obj.registry.pause_rollout(name, comment=comment)))


@rollout.command()
@click.argument("name")
@click.option("--comment", "-m", help="Why.")
@click.pass_obj
def resume(obj: Any, name: str, comment: str | None) -> None:
    """Back to the current step's share (its bake time starts again)."""
    console.print(_line(obj.registry.resume_rollout(name, comment=comment)))


@rollout.command()
@click.argument("name")
@click.option(
    "--reason",
    "-m",
    default="aborted from the command line",
    show_default=True,
    help="Why (kept in the audit trail).",
)
@click.pass_obj
def abort(obj: Any, name: str, reason: str) -> None:
    """Stop the rollout: the challenger gets no more quotes."""
    console.print(_line(obj.registry.abort_rollout(name, reason=reason)))


@rollout.command()
@click.argument("name")
@click.option("--comment", "-m", help="Why.")
@click.pass_obj
def complete(obj: Any, name: str, comment: str | None) -> None:
    """End the rollout: a canary or staged one makes its version Production."""
    console.print(_line(obj.registry.complete_rollout(name, comment=comment)))


@rollout.command()
@click.argument("name")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The HTML file to write (a .json name writes the data instead).",
)
@click.option(
    "--ledger",
    type=click.Path(file_okay=False, path_type=Path),
    help="The quote ledger's folder, for conversion [default: the server's beside the registry].",
)
@click.pass_obj
def report(obj: Any, name: str, output: Path, ledger: Path | None) -> None:
    """Write the champion/challenger comparison of the model's rollout."""
    import json

    from ratekeeper.rollouts.report import render_html

    registry = obj.registry
    data = (
        registry.rollout_report(name, ledger=ledger)
        if ledger is not None
        else registry.rollout_report(name)  # a rating server's: its snapshots and ledger
    )
    if output.suffix.lower() == ".json":
        output.write_text(json.dumps(data, indent=2), encoding="utf-8")
    else:
        output.write_text(render_html(data), encoding="utf-8")
    console.print(f"wrote {output}")


def _line(found: Any) -> str:
    return f"rollout {found.id} of {found.name} version {found.version}: {found.status}" + (
        f" ({found.reason})" if found.reason else ""
    )


COMMANDS = [rollout]
