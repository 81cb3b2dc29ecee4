"""Governance commands: users, tokens, request, approve, reject, requests, report, audit."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import click

from ratekeeper.cli.output import console, table
from ratekeeper.errors import IntegrityError, InvalidInputError


@click.group()
def users() -> None:
    """Users and their roles (modeller, approver, deployer, viewer, admin)."""


@users.command("add")
@click.argument("name")
@click.option("--role", "roles", multiple=True, required=True, help="A role (repeatable).")
@click.pass_obj
def users_add(obj: Any, name: str, roles: tuple[str, ...]) -> None:
    """Add a user (admin only) and print their one-time enrollment code."""
    user = obj.registry.add_user(name, roles)
    console.print(f"user {user.name}: {', '.join(sorted(user.roles))}")
    _print_enrollment(user)


@users.command("enrollment")
@click.argument("name")
@click.pass_obj
def users_enrollment(obj: Any, name: str) -> None:
    """A new one-time enrollment code for a user (a lost or expired one; admin only)."""
    _print_enrollment(obj.registry.renew_enrollment(name))


def _print_enrollment(user: Any) -> None:
    console.print(
        f"enrollment code (give it to {user.name}; once, until "
        f"{user.enrollment_expires_at:%Y-%m-%d %H:%M} UTC): "
        f"ratekeeper enroll {user.enrollment_code}",
        markup=False,
        highlight=False,
    )


@click.command()
@click.argument("code")
@click.pass_obj
def enroll(obj: Any, code: str) -> None:
    """Redeem your enrollment code: prints your own token once (keep it in RATEKEEPER_TOKEN)."""
    click.echo(obj.registry.enroll(code))


@users.command("roles")
@click.argument("name")
@click.option("--role", "roles", multiple=True, required=True, help="A role (repeatable).")
@click.pass_obj
def users_roles(obj: Any, name: str, roles: tuple[str, ...]) -> None:
    """Replace a user's roles (admin only)."""
    user = obj.registry.set_roles(name, roles)
    console.print(f"user {user.name}: {', '.join(sorted(user.roles))}")


@users.command("list")
@click.pass_obj
def users_list(obj: Any) -> None:
    table(
        "Users",
        ["name", "roles", "added by", "added"],
        [(u.name, sorted(u.roles), u.created_by, u.created_at) for u in obj.registry.list_users()],
    )


@click.group()
def tokens() -> None:
    """Your API tokens (shown once, stored hashed, revocable); no one makes another's."""


@tokens.command("create")
@click.option("--description", "-m", help="What the token is for.")
@click.pass_obj
def tokens_create(obj: Any, description: str | None) -> None:
    """Create a token for yourself; it is printed once and cannot be shown again."""
    click.echo(obj.registry.create_token(description=description))


@tokens.command("list")
@click.pass_obj
def tokens_list(obj: Any) -> None:
    table(
        "Tokens",
        ["prefix", "user", "description", "created by", "created", "revoked"],
        [
            (t.prefix, t.user, t.description, t.created_by, t.created_at, t.revoked_at)
            for t in obj.registry.list_tokens()
        ],
    )


@tokens.command("revoke")
@click.argument("prefix")
@click.pass_obj
def tokens_revoke(obj: Any, prefix: str) -> None:
    info = obj.registry.revoke_token(prefix)
    console.print(f"token {info.prefix} of {info.user} revoked")


@click.command()
@click.argument("name")
@click.argument("version", type=int)
@click.argument("stage")
@click.option(
    "--holdout",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Holdout policies with observed claims (Parquet or CSV); needed for "
    "Staging, Production and @protected aliases.",
)
@click.option("--target", help="The holdout's observed column [default: the version's target].")
@click.option("--protected", help="A column the fairness indicator groups by (e.g. gender).")
@click.option(
    "--rollout",
    type=click.Choice(["canary", "staged"]),
    help="A Production request for a rollout plan: once approved, `ratekeeper rollout start` "
    "with the same plan releases the version.",
)
@click.option("--percent", type=float, help="Rollout plan: the canary's share of policies.")
@click.option("--steps", help="Rollout plan: staged traffic steps [default: 1,10,50,100].")
@click.option("--bake", help="Rollout plan: how long each step is held [default: 10m].")
@click.option("--key", help="Rollout plan: the policy field the split is sticky by.")
@click.option("--comment", "-m", help="Why.")
@click.pass_obj
def request(
    obj: Any,
    name: str,
    version: int,
    stage: str,
    holdout: Path | None,
    target: str | None,
    protected: str | None,
    rollout: str | None,
    percent: float | None,
    steps: str | None,
    bake: str | None,
    key: str | None,
    comment: str | None,
) -> None:
    """Request a promotion (STAGE: Staging, Production, Archived, None, or @champion for a
    protected alias); the gates run now and their report is stored with the request."""
    gated = stage.startswith("@") or stage.strip().lower() in ("staging", "production")
    if holdout is None and gated:
        raise InvalidInputError(
            f"a {stage} request runs the promotion gates: give the holdout with --holdout FILE "
            "(Parquet or CSV with the observed claims)"
        )
    frame = read_table(holdout) if holdout is not None else None
    plan = None
    if rollout is not None:
        from ratekeeper.rollouts.plan import RolloutPlan

        plan = RolloutPlan.build(rollout, percent=percent, steps=steps, bake=bake, key=key)
    elif any(v is not None for v in (percent, steps, bake, key)):
        raise InvalidInputError("--percent, --steps, --bake and --key describe a --rollout plan")
    req = obj.registry.request_promotion(
        name,
        version,
        stage,
        holdout=frame,
        comment=comment,
        target=target,
        protected=protected,
        rollout=plan,
    )
    verdict = "gates passed" if req.gates_passed else "GATES FAILED"
    console.print(
        f"request {req.id}: {name} version {version} → {req.target} ({verdict}), {req.status}"
    )
    if req.report_digest:
        console.print(f"report: ratekeeper report {req.id} -o report-{req.id}.html")


@click.command()
@click.argument("request_id", type=int)
@click.option("--comment", "-m", help="Why (kept in the audit trail).")
@click.option("--override", is_flag=True, help="Approve although the gates failed (admin only).")
@click.pass_obj
def approve(obj: Any, request_id: int, comment: str | None, override: bool) -> None:
    """Approve a pending request: the version moves at once."""
    req = obj.registry.approve(request_id, comment=comment, override=override)
    where = f"@{req.alias} points at it" if req.alias else f"is now in {req.target}"
    if req.rollout is not None:
        where = f"may be released by its {req.rollout['mode']} rollout (ratekeeper rollout start)"
    console.print(f"request {req.id} approved: {req.name} version {req.version} {where}")


@click.command()
@click.argument("request_id", type=int)
@click.option("--comment", "-m", help="Why (kept in the audit trail).")
@click.pass_obj
def reject(obj: Any, request_id: int, comment: str | None) -> None:
    """Reject a pending request."""
    req = obj.registry.reject(request_id, comment=comment)
    console.print(f"request {req.id} rejected")


@click.group()
def requests() -> None:
    """Promotion requests."""


@requests.command("list")
@click.argument("name", required=False)
@click.option("--status", type=click.Choice(["pending", "approved", "rejected", "superseded"]))
@click.pass_obj
def requests_list(obj: Any, name: str | None, status: str | None) -> None:
    table(
        "Promotion requests",
        [
            "id",
            "model",
            "version",
            "to",
            "status",
            "gates",
            "requested by",
            "decided by",
            "override",
            "comment",
        ],
        [
            (
                r.id,
                r.name,
                r.version,
                r.target,
                r.status,
                "pass" if r.gates_passed else "FAIL",
                r.requested_by,
                r.decided_by,
                "yes" if r.override else "",
                r.comment,
            )
            for r in obj.registry.list_requests(name, status=status)
        ],
    )


@click.command()
@click.argument("request_id", type=int)
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path),
    required=True,
    help="Where to write the HTML report.",
)
@click.pass_obj
def report(obj: Any, request_id: int, output: Path) -> None:
    """Write a request's validation report as one self-contained HTML file."""
    from ratekeeper.validation.report import render_html

    output.write_text(render_html(obj.registry.request_report(request_id)), encoding="utf-8")
    console.print(f"validation report of request {request_id}: {output}")


@click.group()
def audit() -> None:
    """The tamper-evident audit trail."""


@audit.command("verify")
@click.pass_obj
def audit_verify(obj: Any) -> None:
    """Prove the records: the hash chain, the head's seal (with the signing key), the tables
    against the state the events rebuild, and the protecting triggers. Exit 6 unless all hold."""
    result = obj.registry.verify_audit()
    say = functools.partial(console.print, markup=False, highlight=False, soft_wrap=True)
    say(f"audit trail {'verified' if result.ok else 'FAILED'}: {result.checked} events checked")
    head = result.head or "- (the chain is broken)"
    say(f"head: {head}  (export it: a later verify's chain must extend it)")
    say(f"seal: {_SEALS[result.sealed]}")
    for line in result.state_differences:
        say(f"differs: {line}")
    for line in result.missing_guards:
        say(f"trigger: {line}")
    if not result.ok:
        at = f" at event {result.first_bad_id}" if result.first_bad_id is not None else ""
        raise IntegrityError(f"audit trail broken{at}: {result.reason}")


_SEALS = {
    True: "checked with the signing key",
    False: "DOES NOT MATCH the signing key",
    None: "not checked (no signing key: RATEKEEPER_AUDIT_KEY_FILE)",
}


@audit.command("log")
@click.option("--model", help="Only this model's events.")
@click.option("--limit", type=int, help="At most this many events.")
@click.pass_obj
def audit_log(obj: Any, model: str | None, limit: int | None) -> None:
    table(
        "Audit trail",
        ["#", "when", "who", "action", "model", "version", "target", "before", "after", "comment"],
        [
            (
                e.id,
                e.at,
                e.actor,
                e.action,
                e.model,
                e.version,
                e.target,
                e.before,
                e.after,
                e.comment,
            )
            for e in obj.registry.audit_log(model, limit=limit)
        ],
    )


def read_table(path: Path) -> Any:
    """A holdout file (CSV by its suffix, else Parquet); one line when it cannot be read."""
    import pandas as pd

    try:
        if path.suffix.lower() in (".csv", ".txt"):
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except (ValueError, OSError) as exc:  # pyarrow's and pandas' parse errors are ValueErrors
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise InvalidInputError(
            f"cannot read the holdout {path.name}: {type(exc).__name__}: {first}"
        ) from None


COMMANDS = [users, enroll, tokens, request, approve, reject, requests, report, audit]
