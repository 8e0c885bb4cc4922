"""One contract suite for the `Store` protocol, run against every SQL backend (tests/backends.py).

SQLite runs on a temporary file. PostgreSQL runs on the real server at 127.0.0.1:5432 (trust
auth); each test gets its own database, already migrated (a copy of a template: tests/postgres.py),
dropped afterwards; the tests of the migrations themselves start from an empty one (`empty`). Without
that server the PostgreSQL cases skip locally and fail in CI.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from keel.store import migrations
from keel.store.open import open_store
from keel.store.protocols import KeyRow, Store, TraceQuery
from keel.types import TraceRecord
from tests.backends import SqlBackend


@pytest.fixture
def backend(storage_url: str) -> SqlBackend:
    return SqlBackend.of(storage_url)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty(request: pytest.FixtureRequest, tmp_path: Path) -> SqlBackend:
    """A store no migration has touched yet."""
    if request.param == "sqlite":
        return SqlBackend.of(f"sqlite:///{tmp_path}/keel.db")
    return SqlBackend.of(request.getfixturevalue("pg_empty_url"))


@pytest.fixture
def store(backend: SqlBackend) -> Iterator[Store]:
    opened = open_store(backend.url)
    try:
        yield opened
    finally:
        opened.close()


def _key(kid: str, tenant: str, at: float, **fields: Any) -> KeyRow:
    digest = hashlib.sha256(kid.encode()).hexdigest()
    return KeyRow(kid, tenant, digest, f"sk-{kid}", at, **fields)


def _trace(tid: str, at: float, **fields: Any) -> TraceRecord:
    return TraceRecord(id=tid, started_at=at, **fields)


# ---- migrations


def test_migrate_applies_each_file_once_and_records_it(empty: SqlBackend) -> None:
    backend = empty
    files = [(version, name) for version, name, _ in migrations.pending(backend.dialect, set())]
    assert "0001_init" in [name for _, name in files]
    fresh = open_store(backend.url, migrate=False)
    try:
        assert fresh.migrate() == [name for _, name in files]
        assert fresh.migrate() == []
    finally:
        fresh.close()
    open_store(backend.url).close()  # reopening migrates again: nothing to do, no error
    ledger = backend.query("SELECT version, name, applied_at FROM keel_migrations ORDER BY version")
    assert [(version, name) for version, name, _ in ledger] == files
    assert all(0 < applied_at <= time.time() for _, _, applied_at in ledger)


def test_concurrent_migrations_apply_each_file_exactly_once(empty: SqlBackend) -> None:
    backend = empty
    expected = sorted(name for _, name, _ in migrations.pending(backend.dialect, set()))
    stores = [open_store(backend.url, migrate=False) for _ in range(8)]
    start = threading.Barrier(len(stores))

    def migrate(one: Store) -> list[str]:
        start.wait()
        return one.migrate()

    try:
        with ThreadPoolExecutor(len(stores)) as pool:
            applied = [name for names in pool.map(migrate, stores) for name in names]
    finally:
        for one in stores:
            one.close()
    assert sorted(applied) == expected


# ---- tenants and keys


def test_tenants_create_list_get(store: Store) -> None:
    before = time.time()
    zeta = store.create_tenant("zeta")
    acme = store.create_tenant("acme")
    assert (acme.name, zeta.name) == ("acme", "zeta")
    assert before <= zeta.created_at <= acme.created_at <= time.time()
    assert store.list_tenants() == [acme, zeta]
    assert store.get_tenant("acme") == acme
    assert store.get_tenant("nope") is None


def test_duplicate_tenant_raises_value_error(store: Store) -> None:
    store.create_tenant("acme")
    with pytest.raises(ValueError, match="acme"):
        store.create_tenant("acme")
    assert [t.name for t in store.list_tenants()] == ["acme"]


@pytest.mark.parametrize("regions", [None, ("eu",), ("eu", "us-east", "région-é")])
def test_tenant_regions_round_trip(store: Store, regions: tuple[str, ...] | None) -> None:
    created = store.create_tenant("acme", regions)
    assert created.regions == regions
    assert store.get_tenant("acme") == created
    assert store.list_tenants() == [created]


def test_set_tenant_regions_updates_and_marks_the_tenant_changed(store: Store) -> None:
    before = time.time()
    acme = store.create_tenant("acme")
    globex = store.create_tenant("globex", ("us",))
    changed = dict(store.tenants_changed_since(before))
    assert changed == {"acme": acme.created_at, "globex": globex.created_at}  # creation counts as a change
    mark = time.time()
    assert store.tenants_changed_since(mark + 1) == []

    eu = store.set_tenant_regions("acme", ("eu", "ch"))
    assert eu == dataclasses.replace(acme, regions=("eu", "ch"))
    assert store.get_tenant("acme") == eu
    assert store.list_tenants() == [eu, globex]
    [(name, at)] = store.tenants_changed_since(mark)
    assert name == "acme" and mark <= at <= time.time()

    anywhere = store.set_tenant_regions("globex", None)
    assert anywhere == dataclasses.replace(globex, regions=None)
    assert store.get_tenant("globex") == anywhere
    assert sorted(name for name, _ in store.tenants_changed_since(mark)) == ["acme", "globex"]


def test_set_tenant_regions_of_unknown_tenant_is_none(store: Store) -> None:
    assert store.set_tenant_regions("nope", ("eu",)) is None
    assert store.get_tenant("nope") is None
    assert store.list_tenants() == []


@pytest.mark.parametrize("regions", [(), ("",), ("eu", " ")])
def test_empty_regions_are_refused(store: Store, regions: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="at least one region"):
        store.create_tenant("acme", regions)
    assert store.list_tenants() == []
    acme = store.create_tenant("acme", ("eu",))
    with pytest.raises(ValueError, match="at least one region"):
        store.set_tenant_regions("acme", regions)
    with pytest.raises(ValueError, match="at least one region"):
        store.set_tenant_regions("nope", regions)
    assert store.get_tenant("acme") == acme


def test_keys_create_list_find(store: Store) -> None:
    store.create_tenant("acme")
    store.create_tenant("globex")
    k1 = _key("k1", "acme", 1.0, name="ci", user="ann", models=("fast",))
    k2 = _key("k2", "acme", 2.0)
    k3 = _key("k3", "globex", 3.0)
    for row in (k2, k3, k1):
        store.create_key(row)
    assert store.list_keys("acme") == [k1, k2]
    assert store.list_keys("globex") == [k3]
    assert store.list_keys("initech") == []
    assert store.list_keys() == [k1, k2, k3]
    assert store.find_key(k3.key_hash) == k3
    assert store.find_key(hashlib.sha256(b"nope").hexdigest()) is None


def test_create_key_rejects_unknown_tenant_and_duplicate_hash(store: Store) -> None:
    store.create_tenant("acme")
    store.create_key(_key("k1", "acme", 1.0))
    with pytest.raises(ValueError, match="cannot create key"):
        store.create_key(_key("k2", "initech", 2.0))
    with pytest.raises(ValueError, match="cannot create key"):
        store.create_key(dataclasses.replace(_key("k1", "acme", 1.0), id="k3"))
    assert [k.id for k in store.list_keys()] == ["k1"]


@pytest.mark.parametrize("models", [None, (), ("fast",), ("fast", "smart-é")])
def test_key_models_round_trip(store: Store, models: tuple[str, ...] | None) -> None:
    store.create_tenant("acme")
    row = _key("k1", "acme", 1.0, models=models)
    store.create_key(row)
    found = store.find_key(row.key_hash)
    assert found == row
    assert found is not None and found.models == models


def test_revoke_is_idempotent_and_listed_since(store: Store) -> None:
    store.create_tenant("acme")
    k1, k2, k3 = _key("k1", "acme", 1.0), _key("k2", "acme", 2.0), _key("k3", "acme", 3.0)
    for row in (k1, k2, k3):
        store.create_key(row)
    assert store.revoke_key("k1", 100.0) == dataclasses.replace(k1, revoked_at=100.0)
    assert store.revoke_key("k1", 200.0) == dataclasses.replace(k1, revoked_at=100.0)
    assert store.find_key(k1.key_hash) == dataclasses.replace(k1, revoked_at=100.0)
    assert store.revoke_key("missing", 100.0) is None
    store.revoke_key("k2", 150.5)
    both = sorted([(k1.key_hash, 100.0), (k2.key_hash, 150.5)])
    assert sorted(store.revoked_since(0.0)) == both
    assert sorted(store.revoked_since(100.0)) == both  # `since` is inclusive
    assert store.revoked_since(100.1) == [(k2.key_hash, 150.5)]
    assert store.revoked_since(150.5) == [(k2.key_hash, 150.5)]
    assert store.revoked_since(150.6) == []
    assert store.find_key(k3.key_hash) == k3


# ---- traces

FULL = TraceRecord(
    id="t-full",
    started_at=1_700_000_000.123456,
    endpoint="chat",
    tenant="acme",
    key_id="k1",
    user="ann",
    feature="search",
    session="s-1",
    tags={"env": "prod", "team": "core", "note": "héllo ✓"},
    alias="fast",
    provider="openai",
    model="gpt-4o-mini",
    request={
        "model": "fast",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        ],
        "temperature": 0.2,
        "stop": ["\n", "END"],
        "max_tokens": 256,
        "metadata": None,
    },
    response={
        "choices": [{"index": 0, "message": {"content": "hello", "tool_calls": []}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 7},
        "nested": [[1, 2.5], [], [{"deep": [True, False, None]}]],
    },
    status="partial",
    error_kind="upstream_timeout",
    error_message="timed out after 30s",
    http_status=504,
    input_tokens=12,
    cached_input_tokens=4,
    cache_write_tokens=0,
    output_tokens=7,
    reasoning_tokens=3,
    cost_usd=0.000123456789,
    latency_ms=812.5,
    ttft_ms=95.125,
    attempts=2,
    overhead_ms=0.4321,
    stream=True,
)
SPARSE = TraceRecord(id="t-sparse", started_at=1_700_000_001.5, status="error", http_status=502)
EMBEDDING = TraceRecord(
    id="t-embed",
    started_at=1_700_000_002.0,
    endpoint="embeddings",
    tenant="globex",
    request={"input": ["a", "b"]},
    input_tokens=2,
    attempts=1,
)


def test_append_then_get_round_trips_every_field(store: Store) -> None:
    store.append_traces([FULL, SPARSE, EMBEDDING])
    for record in (FULL, SPARSE, EMBEDDING):
        assert store.get_trace(record.id) == record
    sparse = store.get_trace(SPARSE.id)
    assert sparse is not None
    assert sparse.tags == {} and sparse.request is None and sparse.input_tokens is None
    assert sparse.cost_usd is None and sparse.stream is False
    full = store.get_trace(FULL.id)
    assert full is not None and full.stream is True and isinstance(full.cost_usd, float)
    assert store.get_trace("missing") is None
    assert store.count_traces(0.0, 2e9) == 3


# Inside the window [1000, 2000): a..d. Outside: one just before, one exactly at `until`.
_A = _trace(
    "a", 1000.0, tenant="acme", key_id="k1", user="ann", feature="chat", session="s1", alias="fast", status="ok"
)
WINDOWED = [
    _A,
    dataclasses.replace(
        _A, id="b", started_at=1100.0, key_id="k2", user="bob", feature="search", alias="smart", status="error"
    ),
    dataclasses.replace(
        _A, id="c", started_at=1200.0, tenant="globex", key_id="k3", feature="search", session="s2", status="partial"
    ),
    dataclasses.replace(_A, id="d", started_at=1300.0, session=None),
    dataclasses.replace(_A, id="before", started_at=999.999),
    dataclasses.replace(_A, id="at-until", started_at=2000.0),
]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, ["d", "c", "b", "a"]),
        ({"tenant": "acme"}, ["d", "b", "a"]),
        ({"key_id": "k1"}, ["d", "a"]),
        ({"user": "ann"}, ["d", "c", "a"]),
        ({"feature": "search"}, ["c", "b"]),
        ({"session": "s1"}, ["b", "a"]),
        ({"alias": "smart"}, ["b"]),
        ({"status": "partial"}, ["c"]),
        ({"status": "error"}, ["b"]),
        ({"tenant": "acme", "user": "ann", "status": "ok"}, ["d", "a"]),
        ({"tenant": "initech"}, []),
    ],
    ids=lambda v: ",".join(f"{k}={x}" for k, x in v.items()) if isinstance(v, dict) else None,
)
def test_list_traces_window_and_filters(store: Store, filters: dict[str, Any], expected: list[str]) -> None:
    store.append_traces(WINDOWED)
    found = store.list_traces(TraceQuery(since=1000.0, until=2000.0, **filters))
    assert [r.id for r in found] == expected
    by_id = {r.id: r for r in WINDOWED}
    assert found == [by_id[i] for i in expected]


def test_list_traces_limit_keeps_newest(store: Store) -> None:
    store.append_traces(WINDOWED)
    assert [r.id for r in store.list_traces(TraceQuery(1000.0, 2000.0, limit=2))] == ["d", "c"]
    assert [r.id for r in store.list_traces(TraceQuery(0.0, 3000.0, limit=1))] == ["at-until"]
    assert [r.id for r in store.list_traces(TraceQuery(0.0, 3000.0))] == [
        "at-until",
        "d",
        "c",
        "b",
        "a",
        "before",
    ]


def test_count_traces_uses_half_open_window(store: Store) -> None:
    store.append_traces(WINDOWED)
    assert store.count_traces(1000.0, 2000.0) == 4
    assert store.count_traces(0.0, 3000.0) == 6
    assert store.count_traces(2000.0, 2000.0) == 0
    assert store.count_traces(3000.0, 4000.0) == 0


def test_append_is_idempotent_by_id(store: Store) -> None:
    batch = [FULL, SPARSE, EMBEDDING]
    store.append_traces(batch)
    store.append_traces(batch)
    assert store.count_traces(0.0, 2e9) == 3
    retried = dataclasses.replace(FULL, status="error", cost_usd=9.0)
    fresh = _trace("t-new", 1_700_000_003.0)
    store.append_traces([retried, fresh])
    assert store.get_trace(FULL.id) == FULL  # the first write wins
    assert store.get_trace(fresh.id) == fresh
    assert store.count_traces(0.0, 2e9) == 4
    store.append_traces([])
    assert store.count_traces(0.0, 2e9) == 4


def test_failing_batch_inserts_nothing(store: Store) -> None:
    good = [_trace("g1", 1000.0), _trace("g2", 1001.0)]
    bad = _trace("bad", 1000.5)
    bad.status = None  # type: ignore[assignment]  # violates NOT NULL
    with pytest.raises(Exception, match=r"(?i)not[ -]null"):
        store.append_traces([good[0], bad, good[1]])
    assert store.count_traces(0.0, 2e9) == 0
    assert store.get_trace("g1") is None
    store.append_traces(good)  # the store is still usable after the failure
    assert [r.id for r in store.list_traces(TraceQuery(0.0, 2e9))] == ["g2", "g1"]


def test_concurrent_appends_all_land(store: Store) -> None:
    workers, per_worker, batch = 4, 200, 10
    start = threading.Barrier(workers)

    def write(worker: int) -> None:
        records = [_trace(f"w{worker}-{i}", 1000.0 + i, tenant=f"t{worker}") for i in range(per_worker)]
        start.wait()
        for offset in range(0, per_worker, batch):
            store.append_traces(records[offset : offset + batch])

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(write, range(workers)))
    assert store.count_traces(0.0, 2e9) == workers * per_worker
    query = TraceQuery(0.0, 2e9, tenant="t3", limit=1000)
    assert len(store.list_traces(query)) == per_worker


def test_nul_characters_in_user_content_never_fail_a_batch(store: Store) -> None:
    # PostgreSQL refuses NUL in text and jsonb; a prompt carrying one must not sink its batch.
    odd = _trace("nul", 1000.0, request={"messages": [{"role": "user", "content": "a\x00b \\u0000 literal"}]})
    odd.error_message = "bad\x00byte"
    store.append_traces([odd, _trace("plain", 1001.0)])
    got = store.get_trace("nul")
    assert got is not None and store.get_trace("plain") is not None
    content = got.request["messages"][0]["content"]  # type: ignore[index]
    assert content in ("a\x00b \\u0000 literal", "a\ufffdb \\u0000 literal")
    assert got.error_message in ("bad\x00byte", "bad\ufffdbyte")


# ---- limit overrides and alert claims


def test_set_list_and_replace_limit_overrides(store: Store) -> None:
    store.create_tenant("acme")
    store.create_tenant("globex")
    store.create_key(_key("k1", "acme", 1.0))
    before = time.time()
    acme = store.set_limits("tenant", "acme", {"rpm": 60, "usd_month": 12.5}, "closed")
    assert (acme.scope, acme.subject, acme.limits, acme.on_store_error) == (
        "tenant",
        "acme",
        {"rpm": 60.0, "usd_month": 12.5},
        "closed",
    )
    assert before <= acme.updated_at <= time.time()
    key = store.set_limits("key", "k1", {"concurrency": 2}, None)
    globex = store.set_limits("tenant", "globex", {}, "open")  # a fail mode alone is an override too
    assert store.list_limits() == [key, acme, globex]  # by scope, then subject

    replaced = store.set_limits("tenant", "acme", {"tpm": 1000}, None)  # replaces, never merges
    assert (replaced.limits, replaced.on_store_error) == ({"tpm": 1000.0}, None)
    assert store.list_limits() == [key, replaced, globex]
    assert all(isinstance(v, float) for o in store.list_limits() for v in o.limits.values())


def test_clear_limits(store: Store) -> None:
    store.create_tenant("acme")
    store.set_limits("tenant", "acme", {"rpm": 5}, None)
    assert store.clear_limits("key", "acme") is False  # another scope, same subject
    assert store.clear_limits("tenant", "acme") is True
    assert store.clear_limits("tenant", "acme") is False
    assert store.list_limits() == []


@pytest.mark.parametrize(
    ("scope", "subject", "limits", "on_store_error", "message"),
    [
        ("tenant", "acme", {"rpmm": 5}, None, "unknown limit kind 'rpmm'; use: rpm, tpm"),
        ("tenant", "acme", {"rpm": 0}, None, "limit 'rpm': input should be greater than or equal to 1"),
        ("tenant", "acme", {"rpm": 1.5}, None, "limit 'rpm': input should be a valid integer"),
        ("tenant", "acme", {"usd_day": -1.0}, None, "limit 'usd_day': input should be greater than 0"),
        ("tenant", "acme", {"usd_day": float("inf")}, None, "limit 'usd_day' must be a number"),
        ("tenant", "acme", {"tpm": True}, None, "limit 'tpm' must be a number"),
        ("tenant", "acme", {}, None, "nothing to set"),
        ("tenant", "acme", {"rpm": 5}, "maybe", "on_store_error must be 'open', 'closed' or none"),
        ("key", "k1", {"rpm": 5}, "closed", "on_store_error is chosen per tenant"),
        ("user", "ann", {"rpm": 5}, None, "scope must be 'tenant', 'key' or 'team', not 'user'"),
        ("tenant", "nobody", {"rpm": 5}, None, "no tenant 'nobody'"),
        ("key", "k-nope", {"rpm": 5}, None, "no key with id 'k-nope'"),
        ("key", "acme", {"rpm": 5}, None, "no key with id 'acme'"),  # a tenant's name is not a key id
    ],
)
def test_set_limits_refuses_what_it_cannot_apply(
    store: Store, scope: str, subject: str, limits: dict[str, Any], on_store_error: str | None, message: str
) -> None:
    store.create_tenant("acme")
    store.create_key(_key("k1", "acme", 1.0))
    kept = store.set_limits("tenant", "acme", {"rpm": 9}, None)
    with pytest.raises(ValueError) as refused:
        store.set_limits(scope, subject, limits, on_store_error)
    assert message in str(refused.value)
    assert store.list_limits() == [kept]


def test_limit_kinds_are_the_kinds_the_limits_book_knows() -> None:
    from keel.limits.book import KINDS
    from keel.store.sql.rows import LIMIT_KINDS

    assert set(LIMIT_KINDS) == set(KINDS)


def test_claim_alert_is_true_once_per_crossing(store: Store) -> None:
    assert store.claim_alert("tenant=acme|usd_day", "2025-01-02", 0.8, 100.0) is True
    assert store.claim_alert("tenant=acme|usd_day", "2025-01-02", 0.8, 101.0) is False
    assert store.claim_alert("tenant=acme|usd_day", "2025-01-02", 0.9, 102.0) is True  # another threshold
    assert store.claim_alert("tenant=acme|usd_day", "2025-01-03", 0.8, 103.0) is True  # another period
    assert store.claim_alert("tenant=globex|usd_day", "2025-01-02", 0.8, 104.0) is True  # another counter


def test_claim_alert_from_many_threads_has_one_winner(backend: SqlBackend) -> None:
    stores = [open_store(backend.url) for _ in range(8)]  # one per thread, like separate processes
    start = threading.Barrier(len(stores))

    def claim(one: Store) -> bool:
        start.wait()
        return one.claim_alert("tenant=acme|usd_month", "2025-01", 0.8, time.time())

    try:
        with ThreadPoolExecutor(len(stores)) as pool:
            won = list(pool.map(claim, stores))
    finally:
        for one in stores:
            one.close()
    assert won.count(True) == 1


def test_flip_alert_reports_each_change_once(store: Store) -> None:
    assert store.alert_states() == {}
    assert store.flip_alert("errors|gpt-4o", False, 100.0) is False  # absent is not firing
    assert store.flip_alert("errors|gpt-4o", True, 101.0) is True
    assert store.flip_alert("errors|gpt-4o", True, 102.0) is False  # already firing
    assert store.flip_alert("errors|claude", True, 103.0) is True
    assert store.alert_states() == {"errors|gpt-4o": 101.0, "errors|claude": 103.0}
    assert store.flip_alert("errors|gpt-4o", False, 104.0) is True
    assert store.flip_alert("errors|gpt-4o", False, 105.0) is False
    assert store.flip_alert("errors|gpt-4o", True, 106.0) is True  # a new episode, with its own start
    assert store.alert_states() == {"errors|gpt-4o": 106.0, "errors|claude": 103.0}


def test_flip_alert_from_many_threads_has_one_winner(backend: SqlBackend) -> None:
    stores = [open_store(backend.url) for _ in range(8)]
    start = threading.Barrier(len(stores))

    def flip(one: Store, firing: bool) -> bool:
        start.wait()
        return one.flip_alert("cost|acme", firing, time.time())

    try:
        with ThreadPoolExecutor(len(stores)) as pool:
            on = list(pool.map(flip, stores, [True] * len(stores)))
            off = list(pool.map(flip, stores, [False] * len(stores)))
    finally:
        for one in stores:
            one.close()
    assert on.count(True) == 1 and off.count(True) == 1
