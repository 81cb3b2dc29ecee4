"""Issue 10, "What breaks" 5: the three chain attacks with database access alone (append a forged
event, cut the tail, edit and re-chain), each moving the head to match, are caught by the seal;
without the key nothing is proven, and a process with the wrong key cannot write (SQLite and
PostgreSQL)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

import ratekeeper as rk
from ratekeeper.governance import audit
from ratekeeper.settings import Settings
from registries import governed_team
from tampering import chain, rechain, sql

SEAL_BROKEN = "the head's seal does not match: events were appended, cut or re-chained"


@pytest.fixture
def team(registry_uri, tmp_path):
    """A governed registry: root (admin), alice (modeller), carol (approver); then a refused
    enrollment (an event that changes no table) and carol's second token."""
    team = governed_team(
        registry_uri,
        {"alice": ["modeller"], "carol": ["approver"]},
        artifacts=tmp_path / "artifacts",
    )
    stranger = rk.Registry(registry_uri)
    with pytest.raises(rk.PermissionDeniedError, match="the enrollment code is unknown"):
        stranger.enroll("rke_guessed")
    stranger.close()
    team["carol"].create_token(description="laptop")
    yield team
    for handle in team.values():
        handle.close()


def test_the_intact_registry_verifies_with_its_seal(team) -> None:
    result = team["root"].verify_audit()
    events = team["root"].audit_log()
    assert [e.action for e in events] == [
        "registry.create",
        "token.create",
        "user.add",
        "enroll",
        "user.add",
        "enroll",
        "enroll.refused",
        "token.create",
    ]
    assert result == audit.AuditVerification(True, 8, head=events[-1].hash, sealed=True)


def test_a_forged_event_appended_with_the_head_moved_is_caught_by_the_seal(team) -> None:
    # A consistent forgery: root "gave" alice the approver role, in the table and in the trail.
    last = chain(team["root"])[-1]
    forged = {
        "id": last["id"] + 1,
        "at": last["at"],
        "actor": "root",
        "action": "user.roles",
        "model": None,
        "version": None,
        "target": "alice",
        "before": json.dumps({"roles": ["modeller"]}, separators=(",", ":")),
        "after": json.dumps({"roles": ["approver", "modeller"]}, separators=(",", ":")),
        "comment": None,
    }
    rechain(team["root"], [forged], first_id=forged["id"])
    sql(
        team["root"],
        "INSERT INTO user_roles (user_id, role, granted_by) "
        "SELECT id, 'approver', 'root' FROM users WHERE name = 'alice'",
    )
    result = team["root"].verify_audit()
    assert (result.ok, result.checked, result.sealed) == (False, 9, False)
    assert result.reason is not None and result.reason.startswith(SEAL_BROKEN)
    assert result.state_differences == ()  # the replay agrees: only the seal tells


def test_a_cut_tail_with_the_head_moved_back_is_caught_by_the_seal(team) -> None:
    # Cut the refused enrollment and carol's later token (its row too): the trail that is left
    # matches every table, as it stood before.
    refused = next(e for e in chain(team["root"]) if e["action"] == "enroll.refused")
    rechain(team["root"], [], first_id=refused["id"])
    sql(team["root"], "DELETE FROM tokens WHERE description = 'laptop'")
    assert [e.action for e in team["root"].audit_log()][-2:] == ["user.add", "enroll"]
    result = team["root"].verify_audit()
    assert (result.ok, result.checked, result.sealed) == (False, 6, False)
    assert result.reason is not None and result.reason.startswith(SEAL_BROKEN)
    assert result.state_differences == ()


def test_an_edited_event_re_chained_with_the_head_moved_is_caught_by_the_seal(team) -> None:
    events = chain(team["root"])
    refused = next(e for e in events if e["action"] == "enroll.refused")
    rows = [dict(e) for e in events if e["id"] >= refused["id"]]
    rows[0]["comment"] = "nothing happened"
    rechain(team["root"], rows, first_id=refused["id"])
    assert team["root"].audit_log()[-2].comment == "nothing happened"
    result = team["root"].verify_audit()
    assert (result.ok, result.checked, result.sealed) == (False, 8, False)
    assert result.reason is not None and result.reason.startswith(SEAL_BROKEN)
    assert result.state_differences == ()


def test_without_the_key_nothing_is_proven(team, registry_uri, monkeypatch) -> None:
    monkeypatch.delenv("RATEKEEPER_AUDIT_KEY", raising=False)  # PostgreSQL's key
    if isinstance(registry_uri, Path):  # an embedded registry's key lies beside it: copy the
        copy = registry_uri.parent / "copy"  # database alone, as an auditor given it would
        copy.mkdir()
        with team["root"].engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        shutil.copy(registry_uri / "registry.db", copy / "registry.db")
        registry_uri = copy
    keyless = rk.Registry(registry_uri)
    assert keyless.signing_key is None
    result = keyless.verify_audit()
    assert (result.ok, result.checked, result.sealed) == (False, 8, None)
    assert result.reason is not None and result.reason.startswith(
        "the head's seal cannot be checked without the signing key"
    )
    assert result.head == team["root"].verify_audit().head
    keyless.close()


def test_a_process_with_another_key_can_neither_write_nor_verify(team, registry_uri) -> None:
    other = dataclasses.replace(Settings.from_env(), audit_key="ab" * 32)
    sealed_with = team["root"].signing_key.key_id
    token = team["carol"]._credential.secret
    impostor = rk.Registry(registry_uri, token=token, settings=other)
    assert impostor.signing_key.key_id != sealed_with
    with pytest.raises(
        rk.PermissionDeniedError,
        match=f"sealed with key {sealed_with}, and this process holds key "
        f"{impostor.signing_key.key_id}: use the registry's own key",
    ):
        impostor.create_token(description="reseal")
    result = impostor.verify_audit()
    assert not result.ok
    assert result.reason == (
        f"the head was sealed with key {sealed_with}, not with this key "
        f"({impostor.signing_key.key_id})"
    )
    assert team["root"].verify_audit().ok  # nothing was written
    impostor.close()
