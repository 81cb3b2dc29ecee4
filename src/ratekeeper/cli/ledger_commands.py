"""``ledger show|list|verify`` and ``replay``: what priced a quote, and proof it prices the same."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ratekeeper.cli.output import pairs, table
from ratekeeper.engine import ledger as quote_ledger
from ratekeeper.engine.ledger_store import ledger_objects, ledger_view, open_ledger_objects
from ratekeeper.engine.ledger_verify import verify_ledger, verify_segment
from ratekeeper.errors import NotFoundError

if TYPE_CHECKING:
    from ratekeeper.artifacts.s3 import S3Objects

ledger_option = click.option(
    "--ledger",
    "ledger_dir",
    metavar="PATH",
    help="Quote ledger folder (or s3://bucket/prefix/ledger) [default: $RATEKEEPER_LEDGER, "
    "else ledger/ beside the registry; with the artifacts on S3, their ledger/ too].",
)


def ledger_root(obj: Any, ledger_dir: str | None) -> Path:
    if ledger_dir:
        return Path(ledger_dir)
    return quote_ledger.default_root(obj.settings, obj.registry.url)


@contextlib.contextmanager
def ledger_source(obj: Any, ledger_dir: str | None, **filters: Any) -> Iterator[Path]:
    """A folder to read the ledger from. With the registry's artifacts on S3 (or ``--ledger
    s3://...``), the store's segments and chains in range, the local spool over them."""
    objects: S3Objects | None
    root: Path | None
    if ledger_dir and ledger_dir.startswith("s3://"):
        objects, root = open_ledger_objects(ledger_dir, obj.settings), None
    else:
        root = ledger_root(obj, ledger_dir)
        objects = ledger_objects(getattr(obj.registry, "blobs", None))
    with ledger_view(root, objects, **filters) as view:
        yield view


@click.group()
def ledger() -> None:
    """The quote ledger: every price the rating engine gave."""


@ledger.command("show")
@click.argument("quote_id")
@ledger_option
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
@click.pass_obj
def ledger_show(obj: Any, quote_id: str, ledger_dir: str | None, as_json: bool) -> None:
    """One quote: when, which model version and route, the inputs, the price, who approved it."""
    quoted = quote_ledger.quote_time(quote_id)
    with ledger_source(obj, ledger_dir, since=quoted, until=quoted) as root:
        record = quote_ledger.find_quote(root, quote_id)
    approval = _approval(obj.registry, record)
    if as_json:
        click.echo(json.dumps(_jsonable({**record, "approval": approval}), indent=2))
        return
    pairs(
        f"Quote {record['quote_id']}",
        [
            ("quoted at", record["quoted_at"]),
            ("model", f"{record['model']} version {record['version']}"),
            ("endpoint", record["endpoint"]),
            ("served by", record["route"]),
            ("prediction", repr(record["prediction"])),
            *(approval.items()),
        ],
    )
    table("Inputs", ["field", "value"], sorted(record["inputs"].items()))


@ledger.command("list")
@ledger_option
@click.option("--model", metavar="NAME", help="Only this model.")
@click.option("--version", type=int, metavar="N", help="Only this version.")
@click.option(
    "--since", metavar="DURATION", default="1d", show_default=True, help="e.g. 30m, 24h, 7d."
)
@click.option("--limit", default=20, show_default=True, help="Most recent quotes shown.")
@click.pass_obj
def ledger_list(
    obj: Any,
    ledger_dir: str | None,
    model: str | None,
    version: int | None,
    since: str,
    limit: int,
) -> None:
    """The most recent quotes, newest last, and how many there were."""
    moment = quote_ledger.parse_since(since)
    with ledger_source(obj, ledger_dir, model=model, version=version, since=moment) as root:
        found = quote_ledger.read_ledger(root, model=model, version=version, since=moment)
    rows = (
        found.select(
            ["quote_id", "quoted_at", "model", "version", "endpoint", "route", "prediction"]
        ).slice(max(found.num_rows - limit, 0))
        if found.num_rows
        else None
    )
    table(
        f"Quotes in the last {since}: {found.num_rows:,}",
        ["quote id", "quoted at", "model", "version", "endpoint", "served by", "prediction"],
        [tuple(r.values()) for r in rows.to_pylist()] if rows is not None else [],
    )


@ledger.command("verify")
@ledger_option
@click.option("--model", metavar="NAME", help="Only this model.")
@click.option(
    "--since",
    metavar="DURATION",
    help="Only segments with quotes since: 30m, 24h, 7d [default: all].",
)
@click.pass_obj
def ledger_verify(obj: Any, ledger_dir: str | None, model: str | None, since: str | None) -> None:
    """Re-hash the sealed segments and check their chains and seals.

    Exits 0 when intact (also without a signing key, when the seals cannot be checked: the line
    says so), 1 naming the first segment that fails and why.
    """
    moment = quote_ledger.parse_since(since) if since else None
    with ledger_source(obj, ledger_dir, model=model, since=moment) as root:
        result = verify_ledger(root, obj.registry.signing_key, since=moment, model=model)
    click.echo(result.summary())
    if not result.intact:
        raise SystemExit(1)


@click.command()
@click.argument("quote_id")
@ledger_option
@click.pass_obj
def replay(obj: Any, quote_id: str, ledger_dir: str | None) -> None:
    """Re-price a recorded quote with its recorded version and inputs: the price must be equal.

    Exits 0 when the replayed price is identical to the recorded one and the quote's segment is
    intact (or not yet sealed, which it says); 1 when the price differs or the segment fails
    verification (the record may have been rewritten: the result is not called identical).
    """
    quoted = quote_ledger.quote_time(quote_id)
    with ledger_source(obj, ledger_dir, since=quoted, until=quoted) as root:
        record, segment = quote_ledger.locate_quote(root, quote_id)
        check = verify_segment(root, segment, obj.registry.signing_key)
    scorer = obj.registry.load_model(f"models:/{record['model']}/{record['version']}")
    replayed = scorer.predict_one(record["inputs"])
    same = replayed == record["prediction"] and check.state != "failed"
    if check.state == "failed":
        result = "NOT VERIFIED: the record fails verification, so it proves nothing"
    elif replayed != record["prediction"]:
        result = f"DIFFERS by {replayed - record['prediction']!r}"
    else:
        result = "identical" + (" (unverified: not yet sealed)" if check.state == "open" else "")
    pairs(
        f"Replay of quote {record['quote_id']}",
        [
            ("quoted at", record["quoted_at"]),
            ("model", f"{record['model']} version {record['version']}"),
            ("artifact", scorer.model_version.artifact_digest),
            ("recorded", repr(record["prediction"])),
            ("replayed", repr(replayed)),
            ("ledger record", f"{check.state}: {check.reason}"),
            ("result", result),
        ],
    )
    if not same:
        raise SystemExit(1)


def _approval(registry: Any, record: dict[str, Any]) -> dict[str, Any]:
    """Who put the version that priced the quote in Production, and who approved it."""
    if record["route"] != "Production":
        return {}
    try:
        held = registry.production_at(record["model"], record["quoted_at"])
    except NotFoundError:
        return {}
    if held.version != record["version"]:
        return {}
    approval: dict[str, Any] = {
        "in Production since": held.since,
        "moved by": held.promoted_by,
    }
    if held.request is not None:
        approval["promotion request"] = held.request.id
        approval["requested by"] = held.request.requested_by
        approval["approved by"] = held.request.decided_by
    return approval


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, datetime):
        return value.isoformat()
    return value


COMMANDS: list[click.Command] = [ledger, replay]
