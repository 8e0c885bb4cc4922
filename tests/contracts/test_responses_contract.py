"""The ResponseStore contract, over every SQL backend (SQLite and PostgreSQL): stored Responses API
responses read back whole, only by their own tenant; a conversation followed back in one call, bounded;
deletes by id, by tenant and user, and by age in bounded statements (what retention and purges run)."""

from __future__ import annotations

import asyncio
import time

import pytest

from keel.store.protocols import Store, StoredResponse
from keel.tenancy.deletion import Stores, purge
from keel.traces.retention import RetentionPolicy, sweep

NOW = time.time()


def row(
    rid: str, *, tenant: str = "acme", prev: str | None = None, at: float = NOW, user: str | None = None
) -> StoredResponse:
    response = {"id": rid, "object": "response", "output": [{"type": "message", "content": [{"text": f"out {rid}"}]}]}
    items = [{"id": f"msg_{rid}", "type": "message", "role": "user", "content": [{"type": "input_text", "text": rid}]}]
    return StoredResponse(rid, tenant, at, response, items, prev, user, f"trace-{rid}")


def test_a_response_reads_back_whole_for_its_tenant_only(store: Store) -> None:
    r = row("resp_1", user="u1")
    store.put_response(r)
    store.put_response(row("resp_1", tenant="other"))  # the same id again: nothing changes
    assert store.get_response("acme", "resp_1") == r
    assert store.get_response("other", "resp_1") is None
    assert store.get_response("acme", "resp_2") is None


def test_nul_in_content_is_stored(store: Store) -> None:
    r = row("resp_nul")
    r.response["output"][0]["content"][0]["text"] = "a\x00b"
    store.put_response(r)
    got = store.get_response("acme", "resp_nul")
    assert got is not None and got.response["output"][0]["content"][0]["text"] == "a\ufffdb"


def test_a_conversation_follows_back_within_the_tenant_and_bounded(store: Store) -> None:
    store.put_response(row("resp_a", at=NOW))
    store.put_response(row("resp_b", prev="resp_a", at=NOW + 1))
    store.put_response(row("resp_c", prev="resp_b", at=NOW + 2))
    store.put_response(row("resp_x", tenant="other", prev="resp_a", at=NOW + 3))
    assert [r.id for r in store.response_chain("acme", "resp_c")] == ["resp_a", "resp_b", "resp_c"]
    assert [r.id for r in store.response_chain("acme", "resp_c", limit=2)] == ["resp_b", "resp_c"]
    assert store.response_chain("other", "resp_c") == []
    assert [r.id for r in store.response_chain("other", "resp_x")] == ["resp_x"]  # never into another tenant
    assert store.response_chain("acme", "resp_missing") == []


def test_deletes_by_id_tenant_user_and_age(store: Store) -> None:
    for n in range(5):
        store.put_response(row(f"resp_old{n}", at=NOW - 100, user="u1" if n < 2 else "u2"))
    store.put_response(row("resp_new", at=NOW))
    store.put_response(row("resp_theirs", tenant="other", at=NOW - 100))
    assert store.delete_response("other", "resp_new") is False
    assert store.delete_response("acme", "resp_new") is True and store.get_response("acme", "resp_new") is None
    assert store.delete_responses(limit=10, tenant="acme", user="u1") == 2
    assert store.delete_responses(limit=2, before=NOW - 50, exclude=("other",)) == 2  # bounded
    assert store.delete_responses(limit=10, before=NOW - 50, exclude=("other",)) == 1
    assert store.get_response("other", "resp_theirs") is not None
    with pytest.raises(ValueError):
        store.delete_responses(limit=10)


def test_retention_sweep_and_purge_delete_responses(store: Store) -> None:
    store.put_response(row("resp_old", at=NOW - 3 * 86400))
    store.put_response(row("resp_recent", at=NOW))
    store.put_response(row("resp_kept", tenant="forever", at=NOW - 3 * 86400))
    report = sweep(store, None, RetentionPolicy(2, {"forever": None}), NOW)
    assert report.responses == 1
    assert store.get_response("acme", "resp_old") is None and store.get_response("acme", "resp_recent") is not None
    assert store.get_response("forever", "resp_kept") is not None
    receipt = asyncio.run(purge(Stores(store), "forever"))
    assert receipt.counts["responses"] == 1 and store.get_response("forever", "resp_kept") is None
