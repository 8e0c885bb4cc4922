"""Usage and cost reports from rollups, shared by `keel usage` and `GET /api/usage`.

Parameters arrive as strings (query string or CLI flags) and become one bounded `UsageQuery`; rows
leave as plain dicts. The numbers come from the rollups the trace writer keeps, never from a scan of
raw traces, so a report over a month costs about as much as one over an hour.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from keel.errors import InvalidRequest
from keel.store.protocols import UsageQuery, UsageRow
from keel.store.sql.usage import DIMS, GRAINS
from keel.traces.writer import parse_window

BY = (*DIMS, "session")
PARAMS = ("by", "since", "until", "grain", "tenant", "limit")
MAX_BUCKETS = 5000  # a series longer than this asks for a coarser grain


def usage_query(params: dict[str, str], now: float) -> UsageQuery:
    """A bounded UsageQuery from string parameters; InvalidRequest naming the parameter at fault."""
    for name in params:
        if name not in PARAMS:
            raise InvalidRequest(f"Unknown parameter '{name}'; use: {', '.join(PARAMS)}.", name)
    by = params.get("by", "tenant")
    if by not in BY:
        raise InvalidRequest(f"'by' must be one of: {', '.join(BY)}.", "by")
    since, until = parse_window(params.get("since", "24h"), params.get("until"), now)
    if until <= since:
        raise InvalidRequest("'until' must be after 'since'.", "until")
    grain = params.get("grain") or None
    if grain is not None:
        if grain not in GRAINS:
            raise InvalidRequest(f"'grain' must be one of: {', '.join(GRAINS)}.", "grain")
        if by == "session":
            raise InvalidRequest("Sessions are reported whole: drop 'grain', or group by another dimension.", "grain")
        if (until - since) / GRAINS[grain] > MAX_BUCKETS:
            raise InvalidRequest(f"More than {MAX_BUCKETS} {grain}s in the window: use a coarser grain.", "grain")
    try:
        limit = min(10_000, max(1, int(params.get("limit", "100"))))
    except ValueError:
        raise InvalidRequest("'limit' must be an integer.", "limit") from None
    return UsageQuery(since, until, by, grain, params.get("tenant") or None, limit)


def usage_view(row: UsageRow, by: str) -> dict[str, Any]:
    """One row as the API and `--json` show it: the group under its dimension's name."""
    out = asdict(row)
    out[by] = out.pop("group")
    out["cache_hit_rate"] = round(row.cache_hits / row.cache_lookups, 4) if row.cache_lookups else None
    if row.bucket is None:
        out.pop("bucket")
    if row.first_seen is None:
        out.pop("first_seen")
        out.pop("last_seen")
    return out
