"""Who sees which keys on the dashboard, and the forms' CSRF tokens: pure functions over real values."""

from __future__ import annotations

from keel.dashboard.forms import Form, csrf_token
from keel.dashboard.keypages import visible
from keel.store.protocols import KeyRow
from keel.tenancy.actor import OPERATOR, Actor

OPERATOR_ACTOR = Actor("operator", "admin", None, frozenset({OPERATOR}))


def key(tenant: str) -> KeyRow:
    return KeyRow(id="key_1", tenant=tenant, key_hash="h", prefix="sk-keel-abcd", created_at=0.0)


def test_an_operator_sees_every_tenants_keys_and_a_tenant_actor_its_own() -> None:
    admin = Actor("user", "user:ann", "t1", frozenset({"admin"}))
    assert visible(OPERATOR_ACTOR, key("t1")) and visible(OPERATOR_ACTOR, key("t2"))
    assert visible(admin, key("t1")) and not visible(admin, key("t2"))


def test_a_csrf_token_belongs_to_one_session_cookie() -> None:
    a, b = csrf_token("cookie-a"), csrf_token("cookie-b")
    assert a != b and a == csrf_token("cookie-a") and len(a) == 64
    assert Form({"csrf": [a]}, "cookie-a").trusted
    assert not Form({"csrf": [a]}, "cookie-b").trusted
    assert not Form({}, "cookie-a").trusted and not Form({"csrf": [a]}, None).trusted
    assert not Form({"csrf": ["é" * 64]}, "cookie-a").trusted  # not ASCII: refused, not an error
