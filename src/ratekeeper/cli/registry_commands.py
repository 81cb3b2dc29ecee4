"""``models``, ``versions``, ``stage``, ``alias``, ``history`` and ``export-tables``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from ratekeeper.cli.output import console, pairs, table
from ratekeeper.errors import InvalidInputError
from ratekeeper.registry.entities import ModelVersion


@click.group()
def models() -> None:
    """Registered models."""


@models.command("list")
@click.pass_obj
def models_list(obj: Any) -> None:
    """Every model with its latest and Production versions and aliases."""
    found = obj.registry.list_models()
    table(
        "Models",
        ["name", "latest", "Production", "aliases", "created by", "created"],
        [
            (
                m.name,
                m.latest_version,
                m.production_version,
                {a: f"v{v}" for a, v in m.aliases.items()},
                m.created_by,
                m.created_at,
            )
            for m in found
        ],
    )


@models.command("show")
@click.argument("name")
@click.pass_obj
def models_show(obj: Any, name: str) -> None:
    """One model and all its versions."""
    model = obj.registry.get_model(name)
    pairs(
        f"Model {model.name}",
        [
            ("latest version", model.latest_version),
            ("Production", model.production_version),
            ("aliases", {a: f"v{v}" for a, v in model.aliases.items()}),
            ("created by", model.created_by),
            ("created", model.created_at),
        ],
    )
    _version_table(obj.registry.list_versions(name))


@click.group()
def versions() -> None:
    """Model versions."""


@versions.command("list")
@click.argument("name", required=False)
@click.option("--stage", help="Only versions in this stage.")
@click.option("--alias", help="Only the version with this alias.")
@click.option("--tag", help="Only versions with this tag (KEY or KEY=VALUE).")
@click.pass_obj
def versions_list(
    obj: Any, name: str | None, stage: str | None, alias: str | None, tag: str | None
) -> None:
    """Versions, filtered by model name, stage, alias and tag."""
    _version_table(obj.registry.list_versions(name, stage=stage, alias=alias, tag=tag))


@versions.command("show")
@click.argument("name")
@click.argument("version", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the whole version as JSON.")
@click.pass_obj
def versions_show(obj: Any, name: str, version: int, as_json: bool) -> None:
    """One version: stage, aliases, digest, signature, metrics and lineage."""
    v = obj.registry.get_version(name, version)
    if as_json:
        click.echo(json.dumps(v.to_dict(), indent=2, default=str))
        return
    data = v.lineage.get("training_data", {})
    git = v.lineage.get("git") or {}
    pairs(
        f"{v.name} version {v.version}",
        [
            ("stage", v.stage.value),
            ("aliases", list(v.aliases)),
            ("flavor", v.flavor),
            ("artifact", f"sha256:{v.artifact_digest}"),
            ("size", f"{v.artifact_size:,} bytes"),
            ("created", f"{v.created_at:%Y-%m-%d %H:%M:%S} by {v.created_by}"),
            ("description", v.description),
            ("metrics", v.metrics),
            ("tags", v.tags),
            (
                "training data",
                f"{data.get('rows', '?'):,} rows, sha256:{data.get('content_sha256', '')[:16]}",
            ),
            ("model class", v.lineage.get("model_class")),
            (
                "git",
                f"{git.get('commit', '')[:12]}{' (dirty)' if git.get('dirty') else ''}"
                if git
                else None,
            ),
        ],
    )
    table(
        "Signature",
        ["field", "role", "type", "nullable", "levels / range"],
        [
            (
                f.name,
                f.role,
                f.kind,
                "yes" if f.nullable else "no",
                ", ".join(f.levels[:8]) + (" ..." if len(f.levels) > 8 else "")
                if f.levels is not None
                else (f"[{f.minimum:g}, {f.maximum:g}]" if f.minimum is not None else "-"),
            )
            for f in v.signature.fields
        ],
    )


@click.command()
@click.argument("name")
@click.argument("version", type=int)
@click.argument("stage")
@click.option("--comment", "-m", help="Why (kept in the transition history).")
@click.pass_obj
def stage(obj: Any, name: str, version: int, stage: str, comment: str | None) -> None:
    """Move VERSION of NAME to STAGE (None, Staging, Production, Archived)."""
    v = obj.registry.transition_stage(name, version, stage, comment=comment)
    console.print(f"{v.name} version {v.version} is now in {v.stage.value}")


@click.command()
@click.argument("name")
@click.option("--comment", "-m", help="Why (kept in the transition history).")
@click.pass_obj
def rollback(obj: Any, name: str, comment: str | None) -> None:
    """The kill switch: put NAME's previous Production version back into Production."""
    v = obj.registry.rollback(name, comment=comment)
    console.print(f"{v.name}: version {v.version} is back in Production")


@click.group()
def alias() -> None:
    """Aliases such as champion and challenger."""


@alias.command("set")
@click.argument("name")
@click.argument("alias_name", metavar="ALIAS")
@click.argument("version", type=int)
@click.pass_obj
def alias_set(obj: Any, name: str, alias_name: str, version: int) -> None:
    """Point ALIAS of NAME at VERSION."""
    v = obj.registry.set_alias(name, alias_name, version)
    console.print(f"{v.name}@{alias_name} -> version {v.version}")


@alias.command("delete")
@click.argument("name")
@click.argument("alias_name", metavar="ALIAS")
@click.pass_obj
def alias_delete(obj: Any, name: str, alias_name: str) -> None:
    """Remove ALIAS from NAME."""
    obj.registry.delete_alias(name, alias_name)
    console.print(f"{name}@{alias_name} deleted")


@click.command()
@click.argument("name")
@click.argument("version", type=int, required=False)
@click.option(
    "--at",
    "at",
    metavar="TIME",
    help="Which version was Production at TIME (ISO 8601; UTC unless it says "
    "otherwise), who approved it and on what evidence.",
)
@click.pass_obj
def history(obj: Any, name: str, version: int | None, at: str | None) -> None:
    """The stage history of a model (or one version), or what was Production at a time."""
    if at is not None:
        _production_at(obj.registry, name, at)
        return
    table(
        f"Stage history of {name}",
        ["when", "version", "from", "to", "who", "comment"],
        [
            (t.at, t.version, t.from_stage.value, t.to_stage.value, t.actor, t.comment)
            for t in obj.registry.get_transitions(name, version)
        ],
    )


def _production_at(registry: Any, name: str, at: str) -> None:
    try:
        when = datetime.fromisoformat(at)
    except ValueError:
        raise InvalidInputError(f"not an ISO 8601 time: {at!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    record = registry.production_at(name, when)
    request = record.request
    rows: list[tuple[str, Any]] = [
        ("version", record.version),
        ("Production since", record.since),
        ("moved by", record.promoted_by),
    ]
    if request is None:
        rows.append(("approval", "none: moved directly (open registry or before governance)"))
    else:
        rows += [
            (
                "request",
                f"{request.id}, by {request.requested_by} "
                f"at {request.requested_at:%Y-%m-%d %H:%M:%S}",
            ),
            (
                "approved by",
                f"{request.decided_by} at {request.decided_at:%Y-%m-%d %H:%M:%S}"
                if request.decided_at
                else request.decided_by,
            ),
            ("comment", request.decision_comment),
            (
                "gates",
                "passed"
                if request.gates_passed
                else "FAILED (admin override)"
                if request.override
                else "FAILED",
            ),
            (
                "evidence",
                f"report sha256:{request.report_digest} "
                f"(ratekeeper report {request.id} -o report.html)"
                if request.report_digest
                else None,
            ),
            ("artifact", f"sha256:{request.artifact_digest}"),
        ]
    pairs(f"{name}: Production at {when:%Y-%m-%d %H:%M:%S %Z}", rows)


@click.command("export-tables")
@click.argument("model_uri")
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path),
    required=True,
    help="Folder for the CSV files (created if needed).",
)
@click.pass_obj
def export_tables(obj: Any, model_uri: str, output: Path) -> None:
    """Write a GLM version's base rate and rating-factor relativities as CSV tables."""
    from ratekeeper.packaging.tables import write_rating_tables

    version = obj.registry.resolve(model_uri)
    written = write_rating_tables(obj.registry.load_package(version), output)
    console.print(f"{version.name} version {version.version}: {len(written)} tables in {output}")
    for path in written:
        console.print(f"  {path}")


def _version_table(found: list[ModelVersion]) -> None:
    table(
        "Versions",
        ["model", "version", "stage", "aliases", "flavor", "metrics", "created by", "created"],
        [
            (
                v.name,
                v.version,
                v.stage.value,
                list(v.aliases),
                v.flavor,
                v.metrics,
                v.created_by,
                v.created_at,
            )
            for v in found
        ],
    )


@alias.command("protected")
@click.pass_obj
def alias_protected(obj: Any) -> None:
    """The protected aliases: they move only through an approved request."""
    for name in sorted(obj.registry.protected_aliases()):
        click.echo(name)


@alias.command("protect")
@click.argument("alias_name", metavar="ALIAS")
@click.pass_obj
def alias_protect(obj: Any, alias_name: str) -> None:
    """Make ALIAS move only through an approved request (admin only)."""
    obj.registry.protect_alias(alias_name)
    console.print(f"alias {alias_name} is protected")


@alias.command("unprotect")
@click.argument("alias_name", metavar="ALIAS")
@click.pass_obj
def alias_unprotect(obj: Any, alias_name: str) -> None:
    """Let ALIAS move without a request again (admin only)."""
    obj.registry.unprotect_alias(alias_name)
    console.print(f"alias {alias_name} is no longer protected")


COMMANDS = [models, versions, stage, rollback, alias, history, export_tables]
