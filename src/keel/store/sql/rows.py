"""Row mapping shared by the SQL backends: one column order, one JSON encoding, storable numbers.

A trace's numbers are made storable before they reach a column or a rollup (`storable_count`,
`storable_amount`), the same way for both, so rollups still equal the sums over the trace rows: a
count beyond PostgreSQL's INTEGER or not an int, or an amount that is NaN or infinite, would
otherwise fail its whole batch or poison every sum over its window.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from operator import attrgetter
from typing import Any

import orjson
from pydantic import ValidationError

from keel.config import LimitRule
from keel.store.protocols import KeyRow, LimitOverride, TenantRow, TraceQuery
from keel.store.storable import KEY_FIELDS, MAX_KEY_CHARS, SURROGATE, TEXT_FIELDS, storable
from keel.types import TraceRecord

TRACE_COLUMNS = (
    "id", "started_at", "endpoint", "tenant", "key_id", "user_id", "feature", "session", "tags",
    "alias", "provider", "model", "request", "response", "status", "error_kind", "error_message",
    "http_status", "input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens",
    "reasoning_tokens", "cost_usd", "latency_ms", "ttft_ms", "attempts", "overhead_ms", "stream",
    "route", "attempt_log", "fallback", "prompt_version", "cache", "cache_saved_usd", "payload_blob",
)  # fmt: skip
TRACE_JSON = frozenset({"tags", "request", "response", "route", "attempt_log"})
_COUNTS = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")
_AMOUNTS = ("cost_usd", "latency_ms", "ttft_ms", "overhead_ms", "cache_saved_usd")
TOKENS_MAX = 2**31 - 1  # PostgreSQL INTEGER, the traces' token columns
AMOUNT_MAX = 1e15  # USD or ms in one trace: beyond any real call, and sums of them stay finite
_ATTR = {"user_id": "user"}

TENANT_COLUMNS = ("name", "created_at", "regions", "viewer_content")
KEY_COLUMNS = (
    "id", "tenant", "key_hash", "prefix", "created_at", "name", "user_id", "models", "revoked_at",
    "priority", "max_priority", "team",
)  # fmt: skip
LIMIT_COLUMNS = ("scope", "subject", "limits", "on_store_error", "updated_at")
LIMIT_KINDS = tuple(name for name in LimitRule.model_fields if name != "scope")  # as in keel.yaml


def _dump(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value, default=str).decode()


_trace_values = attrgetter(*(_ATTR.get(c, c) for c in TRACE_COLUMNS))  # one C call per record
_JSON_AT = tuple(i for i, c in enumerate(TRACE_COLUMNS) if c in TRACE_JSON)
_COUNTS_AT = tuple(TRACE_COLUMNS.index(c) for c in _COUNTS)
_AMOUNTS_AT = tuple(TRACE_COLUMNS.index(c) for c in _AMOUNTS)
# (index, longest value stored as it is) of each text column: attribution must fit an index entry
_TEXT_AT = tuple(
    (i, MAX_KEY_CHARS if _ATTR.get(c, c) in KEY_FIELDS else sys.maxsize)
    for i, c in enumerate(TRACE_COLUMNS)
    if _ATTR.get(c, c) in TEXT_FIELDS
)


def trace_to_row(r: TraceRecord) -> tuple[Any, ...]:
    row = list(_trace_values(r))
    for i in _JSON_AT:
        row[i] = _dump(row[i])
    for i in _COUNTS_AT:
        row[i] = storable_count(row[i])
    for i in _AMOUNTS_AT:
        row[i] = storable_amount(row[i])
    return tuple(row)


def storable_count(value: Any) -> int | None:
    """A token count as stored: an int in [0, TOKENS_MAX] (a float or out-of-range int clamped, anything
    else 0); None stays None."""
    if value is None or (type(value) is int and 0 <= value <= TOKENS_MAX):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return 0
    return int(max(0, min(value, TOKENS_MAX)))


def storable_amount(value: Any) -> float | None:
    """USD or milliseconds as stored: a float in [-AMOUNT_MAX, AMOUNT_MAX]; NaN and non-numbers are None."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return None
    return float(max(-AMOUNT_MAX, min(value, AMOUNT_MAX)))


def trace_rows(records: Sequence[TraceRecord]) -> tuple[list[tuple[Any, ...]], list[TraceRecord]]:
    """Rows for `records`, and the records as stored: one that a store would refuse as it is (NUL,
    lone surrogates, JSON orjson cannot write) is made storable first (keel.store.storable), so its
    rollups add up the same values as its row. Raises TypeError for a record that still cannot be written."""
    rows, stored = [], []
    for r in records:
        try:
            row: tuple[Any, ...] | None = trace_to_row(r)
        except TypeError:  # orjson refused a JSON value
            row = None
        if row is None or not clean_row(row):
            r = storable(r)
            row = trace_to_row(r)
        rows.append(row)
        stored.append(r)
    return rows, stored


def clean_row(row: tuple[Any, ...]) -> bool:
    """True when no store refuses the row's text, and attribution fits an index. orjson writes NUL in
    JSON as the escape \\u0000 (a false alarm when the backslash is itself escaped: storable then
    finds nothing) and never a surrogate. Runs per record in the writer: checks inlined, no calls."""
    for i in _JSON_AT:
        v = row[i]
        if v is not None and "\\u0000" in v:
            return False
    for i, longest in _TEXT_AT:
        v = row[i]
        if v.__class__ is str and (
            len(v) > longest or "\x00" in v or (not v.isascii() and SURROGATE.search(v) is not None)
        ):
            return False
    return True


def trace_from_row(row: Sequence[Any]) -> TraceRecord:
    values = {}
    for c, v in zip(TRACE_COLUMNS, row, strict=True):
        if c in TRACE_JSON and isinstance(v, str):
            v = orjson.loads(v)
        values[_ATTR.get(c, c)] = v
    values["stream"] = bool(values["stream"])
    values["tags"] = values["tags"] or {}
    return TraceRecord(**values)


def key_to_row(k: KeyRow) -> tuple[Any, ...]:
    models = None if k.models is None else _dump(list(k.models))
    return (
        k.id, k.tenant, k.key_hash, k.prefix, k.created_at, k.name, k.user, models, k.revoked_at,
        k.priority, k.max_priority, k.team,
    )  # fmt: skip


def key_from_row(row: Sequence[Any]) -> KeyRow:
    kid, tenant, key_hash, prefix, created, name, user, models, revoked, priority, max_priority, team = row
    if isinstance(models, str):
        models = orjson.loads(models)
    models = None if models is None else tuple(models)
    return KeyRow(kid, tenant, key_hash, prefix, created, name, user, models, revoked, priority, max_priority, team)


def regions_json(regions: tuple[str, ...] | None) -> str | None:
    """A tenant's regions as stored: JSON text, or None for any region. Refuse an empty restriction."""
    if regions is None:
        return None
    if not regions or not all(isinstance(r, str) and r.strip() for r in regions):
        raise ValueError(
            "regions must name at least one region (a tenant restricted to none could never be served);"
            " to allow any region, set none"
        )
    return _dump(list(regions))


def tenant_from_row(row: Sequence[Any]) -> TenantRow:
    name, created_at, regions, viewer_content = row
    if isinstance(regions, str):
        regions = orjson.loads(regions)
    return TenantRow(name, created_at, None if regions is None else tuple(regions), bool(viewer_content))


_FILTERS = ("tenant", "key_id", "user", "feature", "session", "alias", "status")


def trace_where(q: TraceQuery, mark: str) -> tuple[str, list[Any]]:
    """WHERE clause for a query; `mark` is the dialect's placeholder (? or %s)."""
    clauses = [f"started_at >= {mark}", f"started_at < {mark}"]
    params: list[Any] = [q.since, q.until]
    for name in _FILTERS:
        value = getattr(q, name)
        if value is not None:
            clauses.append(f"{_column(name)} = {mark}")
            params.append(value)
    return " AND ".join(clauses), params


def _column(attr: str) -> str:
    return "user_id" if attr == "user" else attr


def limits_json(scope: str, limits: Mapping[str, float], on_store_error: str | None) -> str:
    """An override's limits as stored: JSON text. Checked as keel.yaml checks its defaults."""
    if scope not in ("tenant", "key", "team"):
        raise ValueError(f"scope must be 'tenant', 'key' or 'team', not {scope!r}")
    if on_store_error not in (None, "open", "closed"):
        raise ValueError(f"on_store_error must be 'open', 'closed' or none, not {on_store_error!r}")
    if on_store_error is not None and scope != "tenant":
        raise ValueError("on_store_error is chosen per tenant; set it with the tenant's limits")
    if not limits and on_store_error is None:
        raise ValueError("nothing to set: give at least one limit or on_store_error")
    for kind, value in limits.items():
        if kind not in LIMIT_KINDS:
            raise ValueError(f"unknown limit kind '{kind}'; use: {', '.join(LIMIT_KINDS)}")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"limit '{kind}' must be a number (got {value!r})")
        try:
            LimitRule.model_validate({"scope": [scope], kind: value})
        except ValidationError as exc:
            reason = exc.errors()[0]["msg"].lower()
            raise ValueError(f"limit '{kind}': {reason} (got {value!r})") from None
    return orjson.dumps({kind: float(value) for kind, value in limits.items()}).decode()


def limit_from_row(row: Sequence[Any]) -> LimitOverride:
    scope, subject, limits, on_store_error, updated_at = row
    if isinstance(limits, str):
        limits = orjson.loads(limits)
    return LimitOverride(scope, subject, {k: float(v) for k, v in limits.items()}, on_store_error, updated_at)


def missing_owner(scope: str, subject: str) -> str:
    if scope == "tenant":
        return f"no tenant '{subject}'; see `keel tenants list`"
    if scope == "team":
        return f"no team '{subject}' (tenant:team); see `keel teams list`"
    return f"no key with id '{subject}'; see `keel keys list`"


# ---- alert rule states (flip_alert / alert_states), the same SQL on SQLite and PostgreSQL ---------

ALERT_STATES_SQL = "SELECT key, since FROM alert_states WHERE firing"


def flip_sql(firing: bool, key: str, at: float, mark: str) -> tuple[str, tuple[object, ...]]:
    """A statement that changes the row only if its state differs: rowcount 1 means this caller flipped it."""
    if firing:
        sql = (
            f"INSERT INTO alert_states (key, firing, since) VALUES ({mark}, TRUE, {mark})"
            " ON CONFLICT (key) DO UPDATE SET firing = TRUE, since = excluded.since WHERE NOT alert_states.firing"
        )
        return sql, (key, at)
    return f"UPDATE alert_states SET firing = FALSE WHERE key = {mark} AND firing", (key,)
