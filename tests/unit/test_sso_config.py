"""`sso:` in keel.yaml: unknown keys refused, errors naming the key and the fix, secrets from ${ENV} and never shown."""

from __future__ import annotations

from typing import Any

import pytest

from keel import config
from keel.config.sections.sso import Role
from keel.errors import ConfigError
from keel.tenancy.actor import ROLES
from keel.traces.redaction import known_secrets
from tests.unit.test_config import good, issue_at, problems

SECRET = "corp-client-secret-0123456789"


def with_sso(**provider: Any) -> dict[str, Any]:
    raw = good()
    corp = {"issuer": "https://login.example.com", "client_id": "keel", "client_secret": "${CORP_SECRET}"}
    raw["sso"] = {"providers": {"corp": {**corp, "tenant": "acme", "roles": {"eng-admins": "admin"}, **provider}}}
    return raw


def test_a_provider_parses_with_its_secret_from_the_environment_and_never_shows_it() -> None:
    cfg = config.parse(with_sso(), {"CORP_SECRET": SECRET})
    corp = cfg.sso.providers["corp"]
    assert corp.client_secret == SECRET and corp.roles == {"eng-admins": "admin"} and corp.jit
    assert corp.scopes == ["openid", "email", "profile"] and corp.default_role is None
    assert SECRET not in repr(cfg) and SECRET not in str(cfg.sso)
    assert SECRET in known_secrets(cfg, {})  # scrubbed from traces and upstream errors like provider keys


def test_the_roles_a_mapping_names_are_the_tenancy_roles() -> None:
    assert set(Role.__args__) == set(ROLES)  # type: ignore[attr-defined]


def test_mistakes_name_the_key_and_the_fix() -> None:
    err = problems(
        with_sso(issuer="http://login.example.com", colour="blue", roles={"g": "superuser"}), {"CORP_SECRET": "x"}
    )
    assert "https://" in issue_at(err, "sso.providers.corp.issuer").message
    assert issue_at(err, "sso.providers.corp.colour")
    assert issue_at(err, "sso.providers.corp.roles.g")
    missing = problems(with_sso(), {})
    assert "CORP_SECRET" in issue_at(missing, "sso.providers.corp.client_secret").message
    short = with_sso()
    short["sso"]["session_secret"] = "short"
    assert "openssl rand" in issue_at(problems(short, {"CORP_SECRET": "x"}), "sso.session_secret").fix
    assert issue_at(problems(with_sso(scopes=["email"]), {"CORP_SECRET": "x"}), "sso.providers.corp.scopes")


def test_sso_without_an_admin_token_needs_a_session_secret() -> None:
    raw = with_sso()
    raw.pop("admin_token")
    err = problems(raw, {"CORP_SECRET": SECRET})
    assert "KEEL_SESSION_SECRET" in issue_at(err, "sso.session_secret").fix
    raw["sso"]["session_secret"] = "${KEEL_SESSION_SECRET}"
    cfg = config.parse(raw, {"CORP_SECRET": SECRET, "KEEL_SESSION_SECRET": "k" * 64})
    assert cfg.sso.session_secret == "k" * 64 and "k" * 64 not in repr(cfg)


def test_a_loopback_issuer_may_be_plain_http_for_tests() -> None:
    cfg = config.parse(with_sso(issuer="http://127.0.0.1:8080"), {"CORP_SECRET": SECRET})
    assert cfg.sso.providers["corp"].issuer == "http://127.0.0.1:8080"
    with pytest.raises(ConfigError):
        config.parse(with_sso(issuer="https://login.example.com/?x=1"), {"CORP_SECRET": SECRET})
