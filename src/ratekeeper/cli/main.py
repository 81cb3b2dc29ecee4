"""The ``ratekeeper`` command: one readable line and a non-zero exit on any error."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

import click

from ratekeeper.cli import (
    batch_commands,
    governance_commands,
    ledger_commands,
    monitoring_commands,
    registry_commands,
    rollout_commands,
)
from ratekeeper.cli.check_command import check
from ratekeeper.cli.output import errors
from ratekeeper.cli.serve import serve
from ratekeeper.errors import RatekeeperError
from ratekeeper.settings import Settings

EXIT_CODES = {
    "invalid_input": 2,
    "unsupported_model": 2,
    "not_found": 3,
    "conflict": 4,
    "permission_denied": 5,
    "integrity_error": 6,
}


class Context:
    """Built once per invocation: the settings, and the registry opened on first use (never
    created: ``ratekeeper init`` does that)."""

    def __init__(self, settings: Settings, uri: str | None, artifacts: str | None) -> None:
        self.settings = settings
        self.uri = uri
        self.artifacts = artifacts
        self._registry: Any = None

    @property
    def registry(self) -> Any:
        if self._registry is None:
            from ratekeeper.registry.registry import Registry

            self._registry = Registry(self.uri, artifacts=self.artifacts, settings=self.settings)
        return self._registry

    def close(self) -> None:
        if self._registry is not None:
            self._registry.close()


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--registry",
    "uri",
    metavar="URI",
    envvar="RATEKEEPER_REGISTRY_URI",
    help="Registry folder, sqlite:/// or postgresql+psycopg:// URL, or a rating server's "
    "http(s):// address [default: $RATEKEEPER_HOME, ./.ratekeeper].",
)
@click.option(
    "--artifacts",
    metavar="LOCATION",
    help="Artifact store: a folder or s3://bucket/prefix "
    "[default: $RATEKEEPER_ARTIFACTS, else the one the registry was created with].",
)
@click.option(
    "--token",
    metavar="TOKEN",
    help="Your credential for writes [default: $RATEKEEPER_TOKEN]; a governed registry refuses "
    "writes without one.",
)
@click.option(
    "--user",
    metavar="NAME",
    help="Name the actor for reads and open registries [default: $RATEKEEPER_USER or the OS "
    "user]; never a credential.",
)
@click.version_option(package_name="ratekeeper")
@click.pass_context
def cli(
    ctx: click.Context, uri: str | None, artifacts: str | None, token: str | None, user: str | None
) -> None:
    """ratekeeper: a governed model registry and rating engine for insurance pricing."""
    settings = Settings.from_env()
    if user:
        settings = dataclasses.replace(settings, user=user)
    if token:
        settings = dataclasses.replace(settings, token=token)
    ctx.obj = Context(settings, uri, artifacts)
    ctx.call_on_close(ctx.obj.close)


for command in [
    *registry_commands.COMMANDS,
    *governance_commands.COMMANDS,
    *batch_commands.COMMANDS,
    *ledger_commands.COMMANDS,
    *monitoring_commands.COMMANDS,
    *rollout_commands.COMMANDS,
    check,
    serve,
]:
    cli.add_command(command)


@cli.command()
@click.option(
    "--policies", default=50_000, show_default=True, help="Size of the synthetic portfolio."
)
@click.option(
    "--home",
    type=click.Path(path_type=Path),
    default=None,
    help="Registry folder for the demo [default: the --registry / $RATEKEEPER_HOME one].",
)
@click.pass_obj
def demo(obj: Context, policies: int, home: Path | None) -> None:
    """Train a GLM and a GBM on a synthetic motor portfolio, register, promote and price."""
    from ratekeeper.demo import run_demo

    run_demo(home if home is not None else obj.uri, obj.settings, n_policies=policies)


@cli.command()
@click.option("--admin", required=True, metavar="NAME", help="The registry's first admin.")
@click.option(
    "--policy",
    type=click.Choice(["governed", "open"]),
    default="governed",
    show_default=True,
    help="governed: four-eyes and gates; open: a personal sandbox.",
)
@click.option(
    "--identity",
    type=click.Choice(["token", "os"]),
    default="token",
    show_default=True,
    help="token: every governed write needs a token; os: the OS account is the actor "
    "(honest-user governance for one person on a laptop).",
)
@click.pass_obj
def init(obj: Context, admin: str, policy: str, identity: str) -> None:
    """Create a registry and print its first admin's token, once."""
    from ratekeeper.registry.registry import Registry

    registry, token = Registry.create(
        obj.uri,
        admin=admin,
        policy=policy,
        identity=identity,
        artifacts=obj.artifacts,
        settings=obj.settings,
    )
    errors.print(
        f"created a {policy} registry at {registry!r}; {admin} is its admin. Their token "
        "(shown once; export it as RATEKEEPER_TOKEN):"
    )
    click.echo(token)
    registry.close()


@cli.command()
@click.pass_obj
def migrate(obj: Context) -> None:
    """Upgrade the registry's database schema to this release's (the deployment's migration
    step: servers refuse an older schema instead of migrating it under load). Back it up first."""
    from ratekeeper.registry.registry import Registry

    before, after = Registry.migrate(obj.uri, settings=obj.settings)
    if before == after:
        click.echo(f"the registry schema is already at revision {after}")
    elif before is None:
        click.echo(f"created the registry schema at revision {after}")
    else:
        click.echo(f"upgraded the registry schema from revision {before} to {after}")


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def keygen(file: Path) -> None:
    """Write a new signing key to FILE (0600) for RATEKEEPER_AUDIT_KEY_FILE."""
    from ratekeeper.governance.signing import create_key_file

    if file.exists():
        raise click.ClickException(f"{file} exists: a signing key is never overwritten")
    key = create_key_file(file)
    click.echo(f"signing key {key.key_id} written to {file}")


def main(argv: list[str] | None = None) -> None:
    try:
        code = cli.main(args=argv, prog_name="ratekeeper", standalone_mode=False)
    except click.exceptions.Abort:
        errors.print("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        errors.print(f"error: {exc.format_message()}", markup=False, highlight=False)
        sys.exit(exc.exit_code)
    except RatekeeperError as exc:
        errors.print(f"error: {exc.message}", markup=False, highlight=False)
        sys.exit(EXIT_CODES.get(exc.code, 1))
    except KeyboardInterrupt:
        sys.exit(130)
    except OSError as exc:
        errors.print(f"error: {exc}", markup=False, highlight=False)
        sys.exit(1)
    except Exception as exc:  # a bug: still one line, with the traceback on request
        if os.environ.get("RATEKEEPER_DEBUG"):
            raise
        errors.print(
            f"internal error: {type(exc).__name__}: {exc} (set RATEKEEPER_DEBUG=1 "
            "for the traceback)",
            markup=False,
            highlight=False,
        )
        sys.exit(70)
    sys.exit(code if isinstance(code, int) else 0)
