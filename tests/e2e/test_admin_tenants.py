"""Tenant regions (data residency): admin API, store and poller to the Principal, and routing that fails closed.

The admin API runs on a real gateway over HTTP, on SQLite and PostgreSQL; the Authenticator cases
use a real SQLite store, with the revocation poll run by hand.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from keel.errors import AuthError
from keel.keys.auth import Authenticator, issue_key
from keel.store.open import open_store
from keel.store.protocols import Store, TenantRow
from keel.types import Principal
from tests.conftest import Gateway

# ---- the admin API -------------------------------------------------------------------------------


def _admin(gateway: Gateway) -> dict[str, str]:
    return {"authorization": f"Bearer {gateway.admin}"}


def test_create_tenant_with_and_without_regions(gateway: Gateway) -> None:
    api, admin = gateway.url + "/api/tenants", _admin(gateway)
    eu = httpx.post(api, json={"name": "acme", "regions": ["eu", "ch"]}, headers=admin)
    plain = httpx.post(api, json={"name": "globex"}, headers=admin)
    assert (eu.status_code, eu.json()["regions"]) == (201, ["eu", "ch"])
    assert (plain.status_code, plain.json()["regions"]) == (201, None)
    listed = httpx.get(api, headers=admin).json()["data"]
    assert [(t["name"], t["regions"]) for t in listed] == [("acme", ["eu", "ch"]), ("globex", None), ("t1", None)]
    assert gateway.runtime.store.get_tenant("acme") == TenantRow("acme", eu.json()["created_at"], ("eu", "ch"))


@pytest.mark.parametrize("regions", [[], "eu", [1], ["eu", ""], {"eu": True}])
def test_bad_regions_are_400_naming_regions(gateway: Gateway, regions: Any) -> None:
    api, admin = gateway.url + "/api/tenants", _admin(gateway)
    created = httpx.post(api, json={"name": "acme", "regions": regions}, headers=admin)
    patched = httpx.patch(api + "/t1", json={"regions": regions}, headers=admin)
    for r in (created, patched):
        assert r.status_code == 400
        assert r.json()["error"]["param"] == "regions"
        assert "null to allow any region" in r.json()["error"]["message"]
    assert [t.name for t in gateway.runtime.store.list_tenants()] == ["t1"]
    assert gateway.runtime.store.get_tenant("t1") == TenantRow("t1", _created(gateway, "t1"), None)


def _created(gateway: Gateway, name: str) -> float:
    row = gateway.runtime.store.get_tenant(name)
    assert row is not None
    return row.created_at


def test_patch_sets_and_lifts_regions(gateway: Gateway) -> None:
    api, admin = gateway.url + "/api/tenants/t1", _admin(gateway)
    narrowed = httpx.patch(api, json={"regions": ["eu", "us"]}, headers=admin)
    assert narrowed.status_code == 200
    assert (narrowed.json()["name"], narrowed.json()["regions"]) == ("t1", ["eu", "us"])
    assert gateway.runtime.store.get_tenant("t1") == TenantRow("t1", _created(gateway, "t1"), ("eu", "us"))
    lifted = httpx.patch(api, json={"regions": None}, headers=admin)
    assert (lifted.status_code, lifted.json()["regions"]) == (200, None)
    assert httpx.get(gateway.url + "/api/tenants", headers=admin).json()["data"][0]["regions"] is None


def test_patch_unknown_tenant_missing_field_and_no_token(gateway: Gateway) -> None:
    api, admin = gateway.url + "/api/tenants", _admin(gateway)
    unknown = httpx.patch(api + "/nobody", json={"regions": ["eu"]}, headers=admin)
    assert unknown.status_code == 404 and "No tenant 'nobody'" in unknown.json()["error"]["message"]
    missing = httpx.patch(api + "/t1", json={}, headers=admin)
    assert (missing.status_code, missing.json()["error"]["param"]) == (400, "regions")
    assert httpx.patch(api + "/t1", json={"regions": ["eu"]}).status_code == 401
    assert gateway.runtime.store.get_tenant("t1") == TenantRow("t1", _created(gateway, "t1"), None)


def test_region_change_reaches_the_running_gateway_within_a_poll(gateway: Gateway) -> None:
    auth = gateway.runtime.authenticator
    models = httpx.get(gateway.base_url + "/models", headers={"authorization": f"Bearer {gateway.key}"})
    assert models.status_code == 200  # the key is now cached (for 30 s)
    assert asyncio.run(auth.resolve(gateway.key))[0].regions is None
    r = httpx.patch(gateway.url + "/api/tenants/t1", json={"regions": ["eu"]}, headers=_admin(gateway))
    assert r.status_code == 200
    changed = time.monotonic()
    while asyncio.run(auth.resolve(gateway.key))[0].regions != ("eu",):
        assert time.monotonic() - changed < 1.0, "new regions not applied after 1 s"
        time.sleep(0.02)


def _chat(gateway: Gateway, model: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(
        gateway.base_url + "/chat/completions", json=body, headers={"authorization": f"Bearer {gateway.key}"}
    )


def _within_a_second(check: Any) -> None:
    deadline = time.monotonic() + 1.0
    while not check():
        assert time.monotonic() < deadline, "the running gateway did not apply the change within 1 s"
        time.sleep(0.02)


def test_restricted_tenant_fails_closed_over_http(gateway: Gateway) -> None:
    # provider oai is in region us; sim has no region, so no restriction ever admits it
    assert _chat(gateway, "gpt-4o-mini").status_code == 200  # cached: unrestricted
    api, admin = gateway.url + "/api/tenants/t1", _admin(gateway)
    assert httpx.patch(api, json={"regions": ["eu"]}, headers=admin).status_code == 200
    _within_a_second(lambda: _chat(gateway, "gpt-4o-mini").status_code == 403)
    refused = _chat(gateway, "sim").json()["error"]
    assert "restricted to regions eu" in refused["message"]
    assert httpx.patch(api, json={"regions": ["eu", "us"]}, headers=admin).status_code == 200
    _within_a_second(lambda: _chat(gateway, "gpt-4o-mini").status_code == 200)
    assert _chat(gateway, "sim").status_code == 403


# ---- the Authenticator over a real store ---------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(f"sqlite:///{tmp_path}/keel.db")
    try:
        yield opened
    finally:
        opened.close()


def _principal(auth: Authenticator, key: str) -> Principal:
    return asyncio.run(auth.resolve(key))[0]


def test_principal_carries_regions_and_follows_changes_after_a_poll(store: Store) -> None:
    store.create_tenant("acme", ("eu",))
    store.create_tenant("globex")
    acme, globex = issue_key(store, "acme").key, issue_key(store, "globex").key
    auth = Authenticator(store, ttl=3600)
    auth.refresh_revocations()  # acts on the creations above, before anything is cached
    assert _principal(auth, acme).regions == ("eu",)
    assert _principal(auth, globex).regions is None

    store.set_tenant_regions("acme", ("eu", "ch"))
    store.set_tenant_regions("globex", ("us",))
    assert _principal(auth, acme).regions == ("eu",)  # cached until the poll
    assert auth.refresh_revocations() == 2
    assert _principal(auth, acme).regions == ("eu", "ch")
    assert _principal(auth, globex).regions == ("us",)
    assert auth.refresh_revocations() == 0  # a change is acted on once, not at every poll

    store.set_tenant_regions("acme", None)
    assert auth.refresh_revocations() == 1  # only acme's key: globex's stays cached
    assert _principal(auth, acme).regions is None


class _PollMidLookup:
    """A store whose first tenant read returns the old row, then the tenant changes and a poll runs."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.auth: Authenticator | None = None
        self.fired = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def get_tenant(self, name: str) -> TenantRow | None:
        row = self._store.get_tenant(name)
        if not self.fired and self.auth is not None:
            self.fired = True
            self._store.set_tenant_regions(name, ("us",))
            self.auth.refresh_revocations()
        return row


def test_a_lookup_overtaken_by_a_change_is_not_cached(store: Store) -> None:
    store.create_tenant("acme", ("eu",))
    key = issue_key(store, "acme").key
    racing = _PollMidLookup(store)
    auth = Authenticator(racing, ttl=3600)
    auth.refresh_revocations()
    racing.auth = auth
    assert _principal(auth, key).regions == ("eu",)  # read before the change: right for this call...
    assert racing.fired
    assert _principal(auth, key).regions == ("us",)  # ...but never cached


def test_keys_of_a_vanished_tenant_are_refused(store: Store) -> None:
    store.create_tenant("acme")
    key = issue_key(store, "acme").key

    class NoTenants(_PollMidLookup):
        def get_tenant(self, name: str) -> TenantRow | None:
            return None

    auth = Authenticator(NoTenants(store))
    with pytest.raises(AuthError, match="Incorrect API key"):
        _principal(auth, key)
