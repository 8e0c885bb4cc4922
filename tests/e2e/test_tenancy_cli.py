"""`keel users|teams|tokens` as real processes over a real SQLite file: bootstrap an operator and a token,
manage a tenant's people and teams; the token works (and stops working) for the directory the gateway
uses; exit codes 0 ok, 1 failure (a message, never a traceback), 2 usage."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from keel.errors import AuthError
from keel.store.open import open_store
from keel.tenancy.actor import Actor
from keel.tenancy.directory import Directory
from tests.e2e.test_cli import db, keel, work

__all__ = ["db", "work"]  # the fixtures, shared with test_cli


def _resolve(cwd: Path, token: str) -> Actor:
    store = open_store(f"sqlite:///{cwd}/k.db")
    try:
        return asyncio.run(Directory(store).resolve(token))
    finally:
        store.close()


def test_bootstrap_an_operator_then_a_tenants_people(db: Path) -> None:
    added = json.loads(keel(db, "users", "add", "root", "--operator", "--json").stdout)
    assert (added["id"], added["tenant"], added["roles"]) == ("root", None, ["operator"])
    made = keel(db, "tokens", "create", "--user", "root", "--name", "laptop", "--expires-in", "30d")
    token = made.stdout.strip()
    assert token.startswith("keel_pat_") and "shown only once" in made.stderr
    actor = _resolve(db, token)
    assert actor.kind == "operator"

    keel(db, "tenants", "create", "acme")
    keel(db, "teams", "add", "ml", "--tenant", "acme")
    assert [t["name"] for t in json.loads(keel(db, "teams", "list", "--tenant", "acme", "--json").stdout)] == ["ml"]
    keel(
        db, "users", "add", "ann", "--tenant", "acme", "--roles", "developer", "--team", "ml", "--email", "a@acme.test"
    )
    keel(db, "users", "set-role", "ann", "admin,viewer")
    listed = json.loads(keel(db, "users", "list", "--tenant", "acme", "--json").stdout)
    assert [(u["id"], u["roles"], u["team"]) for u in listed] == [("ann", ["admin", "viewer"], "ml")]
    scoped = keel(db, "tokens", "create", "--user", "ann", "--scopes", "keys.read", "--json")
    issued = json.loads(scoped.stdout)
    assert issued["scopes"] == ["keys.read"] and "token_hash" not in issued
    listed_tokens = keel(db, "tokens", "list", "--user", "ann", "--json").stdout
    assert issued["token"] not in listed_tokens and json.loads(listed_tokens)[0]["id"] == issued["id"]
    shown = json.loads(keel(db, "users", "show", "ann", "--json").stdout)
    assert [t["id"] for t in shown["tokens"]] == [issued["id"]]

    keel(db, "users", "disable", "ann")
    with pytest.raises(AuthError, match="disabled"):
        _resolve(db, issued["token"])
    keel(db, "users", "disable", "ann", "--enable")
    assert _resolve(db, issued["token"]).id == "user:ann"
    keel(db, "tokens", "revoke", issued["id"])
    with pytest.raises(AuthError, match="revoked"):
        _resolve(db, issued["token"])
    keel(db, "users", "remove", "ann")
    keel(db, "teams", "remove", "ml", "--tenant", "acme")
    assert json.loads(keel(db, "users", "list", "--tenant", "acme", "--json").stdout) == []


def test_refusals_are_exit_1_with_a_message_and_usage_errors_2(db: Path) -> None:
    assert (
        "No tenant 'nowhere'"
        in keel(db, "users", "add", "x", "--tenant", "nowhere", "--roles", "viewer", code=1).stderr
    )
    keel(db, "tenants", "create", "acme")
    assert "Roles" in keel(db, "users", "add", "x", "--tenant", "acme", "--roles", "root", code=1).stderr
    assert "--operator" in keel(db, "users", "add", "x", "--tenant", "acme", "--operator", code=1).stderr
    assert "No user" in keel(db, "tokens", "create", "--user", "ghost", code=1).stderr
    assert "expires-in" in keel(db, "tokens", "create", "--user", "ghost", "--expires-in", "soon", code=1).stderr
    assert "No token" in keel(db, "tokens", "revoke", "pat_nope", code=1).stderr
    keel(db, "users", "set-role", code=2)
    keel(db, "teams", "add", "ml", code=2)
