"""What a search asks and what it returns, and the filter language of its callers.

Filters are a JSON object, one entry per key, all of which must hold (Chroma's and Pinecone's shape):
`{"lang": "en"}` (equality), `{"year": {"$gte": 2020, "$lt": 2025}}` (ranges), `{"team": {"$in": ["a",
"b"]}}` (sets), `$ne`, `$nin`, `$exists`. Keys are metadata keys, or the document fields `updated_at`,
`valid_until`, `source`, `title`, `document_id`. `parse_filters` refuses anything else, naming it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from keel.store.protocols.rag_index import Filter, FilterOp

Mode = Literal["hybrid", "lexical", "vector"]
MAX_TOP_K = 100
MAX_CANDIDATES = 1000
MAX_FILTERS = 16
MAX_SET = 100
MAX_QUERY_CHARS = 4000
_KEY = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_OPS: dict[str, FilterOp] = {
    "$eq": "eq", "$ne": "ne", "$in": "in", "$nin": "nin", "$gt": "gt", "$gte": "gte", "$lt": "lt", "$lte": "lte",
    "$exists": "exists",
}  # fmt: skip


class BadSearch(ValueError):
    """A search request that cannot run; `param` names the field."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class SearchQuery:
    tenant: str
    collection: str
    text: str
    top_k: int = 10
    user: str | None = None
    groups: tuple[str, ...] = ()
    everything: bool = False  # an admin search: the tenant's every document, access lists aside
    filters: tuple[Filter, ...] = ()
    mode: Mode = "hybrid"
    candidates: int = 100  # per list (lexical, vector) before fusion
    now: float | None = None  # freshness is judged at this time (default: now)
    build: str | None = None  # a given build instead of the active one (evals of a shadow)
    half_life_days: float | None = None  # decay by age: a document's fused score halves every this many days
    exclude_expired: bool = True  # documents past their valid_until are left out (inside the candidate queries)


@dataclass(frozen=True, slots=True)
class Hit:
    chunk_id: int
    document_id: str
    title: str
    version: int
    ordinal: int
    text: str
    heading_path: tuple[str, ...]
    metadata: Mapping[str, object]
    source: str
    updated_at: float
    scores: Mapping[str, float | None]  # lexical, vector, fused (after any decay), rerank, final, freshness
    ranks: Mapping[str, int | None]  # lexical, vector (1-based, within their candidate lists)
    why: str


@dataclass(frozen=True, slots=True)
class SearchResult:
    build: str
    model: str
    mode: Mode
    fusion: str
    hits: tuple[Hit, ...]
    candidates: Mapping[str, int] = field(default_factory=dict)  # lexical, vector, admitted documents (in process)
    ms: Mapping[str, float] = field(default_factory=dict)  # builds, embed, admitted, lexical, vector, fuse, fetch…
    rerank: Mapping[str, Any] | None = None  # keel.rag.rerank's report: its spec, outcome, reason, trace_id, ms
    searched: str = "process"  # where the candidates came from: "process" (a build held here) or "database"


MAX_HALF_LIFE_DAYS = 36500.0


Freshness = dict[str, float | bool | None]  # the fields a collection or a request states, and only those
_FRESHNESS = ("half_life_days", "exclude_expired")


def parse_freshness(raw: object, param: str = "freshness") -> Freshness | None:
    """`{"half_life_days"?: N | null, "exclude_expired"?: bool}`: a decay by age (N > 0 days, at most 100
    years; null: none) and whether documents past their `valid_until` are left out. Only the fields given
    are kept: a request's override its collection's one by one (`resolve_freshness`). None: nothing given."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or not raw or not set(raw) <= set(_FRESHNESS):
        raise BadSearch(param, f"{param} must be an object {{half_life_days?: N | null, exclude_expired?: bool}}")
    out: Freshness = {}
    if "half_life_days" in raw:
        days = raw["half_life_days"]
        if days is not None and (
            isinstance(days, bool) or not isinstance(days, (int, float)) or not 0 < days <= MAX_HALF_LIFE_DAYS
        ):
            raise BadSearch(
                f"{param}.half_life_days",
                f"half_life_days must be a number of days in (0, {MAX_HALF_LIFE_DAYS:g}], or null for no decay",
            )
        out["half_life_days"] = None if days is None else float(days)
    if "exclude_expired" in raw:
        if not isinstance(raw["exclude_expired"], bool):
            raise BadSearch(f"{param}.exclude_expired", "exclude_expired must be true or false")
        out["exclude_expired"] = raw["exclude_expired"]
    return out


def resolve_freshness(*layers: Mapping[str, object] | None) -> tuple[float | None, bool]:
    """(half-life in days or None, exclude expired?) from the layers, later ones winning field by field
    (a collection's defaults, then the request's); unstated: no decay, expired documents excluded."""
    merged: dict[str, object] = {}
    for layer in layers:
        merged.update(layer or {})
    days, exclude = merged.get("half_life_days"), merged.get("exclude_expired", True)
    return (float(days) if isinstance(days, (int, float)) else None), bool(exclude)


def parse_filters(raw: object, param: str = "filters") -> tuple[Filter, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        raise BadSearch(param, f"{param} must be an object of key: value or key: {{$op: value}}")
    if len(raw) > MAX_FILTERS:
        raise BadSearch(param, f"{param} has {len(raw)} keys; at most {MAX_FILTERS}")
    out: list[Filter] = []
    for key, cond in raw.items():
        if not isinstance(key, str) or not _KEY.match(key):
            raise BadSearch(f"{param}.{key}", "a filter key is 1-64 letters, digits, '_', '-' or '.'")
        if isinstance(cond, Mapping):
            if not cond:
                raise BadSearch(f"{param}.{key}", "an operator object needs at least one of " + ", ".join(_OPS))
            for op, value in cond.items():
                if op not in _OPS:
                    raise BadSearch(f"{param}.{key}.{op}", f"unknown operator {op!r}; use one of " + ", ".join(_OPS))
                out.append(_checked(Filter(key, _OPS[op], value), f"{param}.{key}.{op}"))
        else:
            out.append(_checked(Filter(key, "eq", cond), f"{param}.{key}"))
    return tuple(out)


def _checked(f: Filter, param: str) -> Filter:
    scalar = (str, int, float, bool)
    if f.op in ("in", "nin"):
        if not isinstance(f.value, list) or len(f.value) > MAX_SET or not all(isinstance(v, scalar) for v in f.value):
            raise BadSearch(param, f"$in/$nin take a list of at most {MAX_SET} strings, numbers or booleans")
        return Filter(f.key, f.op, tuple(cast(list[object], f.value)))
    if f.op == "exists":
        if not isinstance(f.value, bool):
            raise BadSearch(param, "$exists takes true or false")
        return f
    if f.op in ("gt", "gte", "lt", "lte"):
        if isinstance(f.value, bool) or not isinstance(f.value, (int, float, str)):
            raise BadSearch(param, "a range bound is a number or a string")
        return f
    if not isinstance(f.value, scalar):
        raise BadSearch(param, "an equality takes a string, number or boolean")
    return f
