"""``ratekeeper serve``: the rating engine over HTTP."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from ratekeeper.cli.output import errors
from ratekeeper.errors import NotFoundError
from ratekeeper.monitoring.drift import MIN_SAMPLE


@click.command()
@click.option(
    "--registry",
    "registry_uri",
    metavar="URI",
    help="The registry to serve (same as the global --registry).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, help="Port (0 picks a free one).")
@click.option(
    "--workers",
    default=1,
    show_default=True,
    envvar="RATEKEEPER_WORKERS",
    show_envvar=True,
    help="Worker processes.",
)
@click.option(
    "--model",
    "models",
    multiple=True,
    metavar="NAME",
    help="Serve only these models [default: every model with a Production version].",
)
@click.option(
    "--invocations-model",
    metavar="NAME[@ALIAS]",
    help="The model behind POST /invocations (the MLflow scoring protocol).",
)
@click.option(
    "--poll-interval",
    default=0.2,
    show_default=True,
    help="Seconds between two checks of the registry for promotions (hot swap).",
)
@click.option(
    "--max-policies",
    default=1000,
    show_default=True,
    help="Most policies in one /score request.",
)
@click.option(
    "--max-invocation-rows",
    type=click.IntRange(min=1),
    metavar="N",
    help="Most rows in one POST /invocations request "
    "[default: $RATEKEEPER_MAX_INVOCATION_ROWS, else 10,000].",
)
@click.option(
    "--ledger",
    "ledger_dir",
    metavar="PATH",
    type=click.Path(file_okay=False),
    help="Quote ledger folder [default: $RATEKEEPER_LEDGER, else ledger/ beside the registry].",
)
@click.option(
    "--no-ledger", is_flag=True, help="Do not record quotes (not for production: no replay)."
)
@click.option(
    "--drift-interval",
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="How often to compute the PSI of the served quotes (0: never; needs the ledger).",
)
@click.option(
    "--drift-window",
    default="1h",
    show_default=True,
    metavar="DURATION",
    help="The quotes the PSI looks at: the last 30m, 24h, 7d ...",
)
@click.option(
    "--drift-min-quotes",
    default=MIN_SAMPLE,
    show_default=True,
    help="Fewer quotes in the window than this: no PSI (it would be noise).",
)
@click.option(
    "--drift-warn", default=0.10, show_default=True, help="PSI from which a factor warns."
)
@click.option("--drift-alert", default=0.25, show_default=True, help="PSI from which it alerts.")
@click.option(
    "--alert-webhook",
    metavar="URL",
    help="POST a JSON alert here when a served version's drift status changes.",
)
@click.option(
    "--require-models",
    is_flag=True,
    envvar="RATEKEEPER_REQUIRE_MODELS",
    show_envvar=True,
    help="Refuse to start when there is nothing to serve (no model with a Production version, "
    "or a --model without one) instead of warning.",
)
@click.option(
    "--certfile",
    metavar="PEM",
    envvar="RATEKEEPER_TLS_CERTFILE",
    show_envvar=True,
    help="Serve HTTPS with this certificate chain (with --keyfile).",
)
@click.option(
    "--keyfile",
    metavar="PEM",
    envvar="RATEKEEPER_TLS_KEYFILE",
    show_envvar=True,
    help="The TLS private key (unencrypted; readable by the server's user only).",
)
@click.option(
    "--pricing-token-file",
    metavar="FILE",
    envvar="RATEKEEPER_PRICING_TOKEN_FILE",
    show_envvar=True,
    help="Put every pricing route behind a token: the file holds one or more (one a line); "
    "a registry token is accepted too.",
)
@click.option(
    "--request-cpus",
    metavar="CPUS",
    callback=lambda _ctx, _param, value: parse_cpus(value),
    envvar="RATEKEEPER_REQUEST_CPUS",
    show_envvar=True,
    help="Cores for the promotion-request process, which reads holdout uploads and runs the "
    "gates (Linux; e.g. 3 or 2-3 or 1,3). Default: the server's own. Use it where the quote "
    "workers are pinned to cores of their own.",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
@click.pass_obj
def serve(
    obj: Any,
    registry_uri: str | None,
    host: str,
    port: int,
    workers: int,
    models: tuple[str, ...],
    invocations_model: str | None,
    poll_interval: float,
    max_policies: int,
    max_invocation_rows: int | None,
    ledger_dir: str | None,
    no_ledger: bool,
    drift_interval: float,
    drift_window: str,
    drift_min_quotes: int,
    drift_warn: float,
    drift_alert: float,
    alert_webhook: str | None,
    require_models: bool,
    certfile: str | None,
    keyfile: str | None,
    pricing_token_file: str | None,
    request_cpus: frozenset[int] | None,
    log_level: str,
) -> None:
    """Start the rating engine: quotes over HTTP, following the registry's promotions."""
    # Several processes (workers, the drift watcher) share metrics through a folder, which must be
    # set before anything imports prometheus_client.
    if workers > 1 or (not no_ledger and drift_interval > 0):
        from ratekeeper.http.multiprocess import prepare_multiprocess_metrics

        prepare_multiprocess_metrics()
    from ratekeeper.engine.drift_watcher import DriftWatchConfig
    from ratekeeper.engine.ledger import LedgerConfig, default_root, parse_duration
    from ratekeeper.engine.ledger_store import ledger_objects
    from ratekeeper.http.app import AppConfig
    from ratekeeper.http.pricing_gate import read_pricing_tokens
    from ratekeeper.http.server import ServeConfig
    from ratekeeper.http.server import serve as run
    from ratekeeper.http.startup import check_tls
    from ratekeeper.monitoring.drift import Bands

    if registry_uri is not None:
        obj.uri = registry_uri
    if workers < 1:
        raise click.BadParameter("must be at least 1", param_hint="--workers")
    # Open the registry here, so that a bad URI or a schema of another release fails fast, with
    # one line, before any worker starts (a registry is never migrated by its servers).
    url = obj.registry.url
    key = obj.registry.signing_key  # seals the ledger's chains (None: hashes only)
    store = ledger_objects(obj.registry.blobs)  # artifacts on S3: the ledger is shipped there
    tls = check_tls(certfile, keyfile)
    tokens = read_pricing_tokens(pricing_token_file) if pricing_token_file else ()
    nothing = nothing_to_serve(obj.registry, list(models))
    obj.close()  # and hold no connection: the workers open their own
    if nothing is not None:
        if require_models:
            raise NotFoundError(f"{nothing} (--require-models)")
        errors.print(
            f"WARNING: {nothing}: quotes will be answered 404 until a version is promoted "
            "(the server follows promotions; --require-models refuses to start instead)",
            style="bold yellow",
            markup=False,
            highlight=False,
        )
    ledger, drift = None, None
    if not no_ledger:
        root = Path(ledger_dir) if ledger_dir else default_root(obj.settings, url)
        ledger = LedgerConfig(
            root.resolve(),
            key=key,
            store=store,
            spool_max_bytes=obj.settings.ledger_spool_max_bytes,
        )
        if drift_interval > 0:
            drift = DriftWatchConfig(
                ledger=ledger.root,
                interval=drift_interval,
                window=parse_duration(drift_window),
                min_quotes=drift_min_quotes,
                bands=Bands(drift_warn, drift_alert),
                webhook=alert_webhook,
                store=store,
            )
    elif alert_webhook:
        raise click.UsageError("--alert-webhook needs the quote ledger: drop --no-ledger")
    run(
        ServeConfig(
            settings=obj.settings,
            registry_uri=obj.uri,
            artifacts=obj.artifacts,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            tls=tls,
            pricing_tokens=tokens,
            app=AppConfig(
                models=list(models) or None,
                invocations_model=invocations_model,
                poll_interval=poll_interval,
                max_policies=max_policies,
                max_invocation_rows=max_invocation_rows or obj.settings.max_invocation_rows,
                request_cpus=request_cpus,
                ledger=ledger,
                drift=drift,
            ),
        )
    )


def parse_cpus(value: str | None) -> frozenset[int] | None:
    """``"1,3-4"`` as ``{1, 3, 4}``: cores of this machine."""
    if not value:
        return None
    cpus: set[int] = set()
    try:
        for part in value.split(","):
            first, _, last = part.strip().partition("-")
            cpus.update(range(int(first), int(last or first) + 1))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a list of cores (e.g. 3 or 2-3 or 1,3)"
        ) from None
    if not hasattr(os, "sched_setaffinity"):
        raise click.BadParameter("choosing cores needs Linux")
    present = os.cpu_count() or 1  # not the server's own affinity: it may be pinned elsewhere
    if not cpus or max(cpus) >= present:
        raise click.BadParameter(f"{value!r}: this machine has cores 0-{present - 1}")
    return frozenset(cpus)


def nothing_to_serve(registry: Any, models: list[str]) -> str | None:
    """Why a server on this registry would have nothing to price (``None``: it has something)."""
    found = {m.name: m for m in registry.list_models()}
    if models:
        missing = [n for n in models if n not in found]
        if missing:
            return f"no model {', '.join(map(repr, missing))} in the registry at {registry!r}"
        idle = [n for n in models if found[n].production_version is None]
        if idle:
            return f"model {', '.join(map(repr, idle))} has no Production version"
        return None
    if not any(m.production_version is not None for m in found.values()):
        what = "no model" if not found else "no model with a Production version"
        return f"the registry at {registry!r} has {what}"
    return None
