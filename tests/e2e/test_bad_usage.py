"""Upstream usage is checked, and one bad row never breaks a usage query: on SQLite and PostgreSQL.

Over HTTP: the fake upstream reports negative, fractional, boolean and absurd token counts; the
answer still flows, the counts are clamped and the trace says so, the cost stays sane, and
`GET /api/usage` and `keel usage` answer for every window holding the row. In the store: records
with numbers no column can hold (written by anything, or before this check existed) are stored
as rollups and trace rows that agree, and a query over them never fails.
"""

from __future__ import annotations

import json
import math
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import psycopg
import pytest

from keel.providers.prices import PriceBook
from keel.store.protocols import Store, TraceQuery, UsageQuery
from keel.testing import FakeUpstream, Script
from keel.traces.rollups import usage_view
from keel.types import TraceRecord, Usage
from keel.wire.base import MAX_TOKENS
from tests.conftest import Gateway

KEEL = [sys.executable, "-m", "keel.cli.main"]
ASK: Any = [{"role": "user", "content": "hello"}]


def api_usage(gw: Gateway, **params: str) -> list[dict[str, Any]]:
    r = httpx.get(gw.url + "/api/usage", params=params, headers={"authorization": f"Bearer {gw.admin}"})
    assert r.status_code == 200, r.text
    return r.json()["data"]  # type: ignore[no-any-return]


def test_bad_upstream_usage_is_clamped_flagged_and_every_usage_query_still_answers(
    gateway: Gateway, up: FakeUpstream, tmp_path: Path
) -> None:
    up.script(
        Script(bad_usage={"prompt_tokens": 1e30, "completion_tokens": -3}),  # non-streamed
        Script(bad_usage={"prompt_tokens": 2**62, "completion_tokens": 2.5}),  # streamed
        Script(bad_usage={"prompt_tokens": True, "completion_tokens": "7"}),
        Script(usage={"prompt_tokens": 10, "completion_tokens": 4}),  # a good one beside them
    )
    with openai.OpenAI(base_url=gateway.base_url, api_key=gateway.key, max_retries=0, timeout=10) as c:
        first = c.chat.completions.create(model="gpt-4o-mini", messages=ASK)
        chunks = list(
            c.chat.completions.create(
                model="gpt-4o-mini", messages=ASK, stream=True, stream_options={"include_usage": True}
            )
        )
        c.chat.completions.create(model="gpt-4o-mini", messages=ASK)
        c.chat.completions.create(model="gpt-4o-mini", messages=ASK)
    # the answers flowed, with their usage clamped
    assert first.choices[0].message.content == "echo: hello"
    assert first.usage is not None and (first.usage.prompt_tokens, first.usage.completion_tokens) == (MAX_TOKENS, 0)
    last = chunks[-1].usage
    assert last is not None and (last.prompt_tokens, last.completion_tokens) == (MAX_TOKENS, 2)

    traces = sorted(gateway.traces(), key=lambda t: t.started_at)
    assert [t.status for t in traces] == ["ok"] * 4
    assert [(t.input_tokens, t.output_tokens) for t in traces] == [(MAX_TOKENS, 0), (MAX_TOKENS, 2), (0, 0), (10, 4)]
    flags = [t.tags.get("keel.usage") for t in traces]
    assert flags[0] == "clamped: prompt_tokens=1e+30, completion_tokens=-3"
    assert flags[1] == "clamped: prompt_tokens=4611686018427387904, completion_tokens=2.5"
    assert flags[2] == "clamped: prompt_tokens=True, completion_tokens=7" and flags[3] is None
    prices = PriceBook.bundled()
    for t in traces:  # the cost of the clamped usage: finite and what the price table says
        assert t.cost_usd == prices.cost("gpt-4o-mini", Usage(t.input_tokens, t.output_tokens))
        assert t.cost_usd is not None and math.isfinite(t.cost_usd) and t.cost_usd < 10

    for params in ({"since": "1h"}, {"by": "model", "since": "1d"}, {"by": "alias", "since": "30d"}):
        (row,) = api_usage(gateway, **params)
        assert row["calls"] == 4 and row["input_tokens"] == 2 * MAX_TOKENS + 10 and row["output_tokens"] == 6
        assert row["cost_usd"] == pytest.approx(sum(t.cost_usd for t in traces))
    series = api_usage(gateway, since="2h", grain="minute")
    assert sum(r["calls"] for r in series) == 4

    done = subprocess.run(
        [*KEEL, "usage", "--since", "1h", "--json"], cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["input_tokens"] == 2 * MAX_TOKENS + 10


# ---- the store: numbers no column can hold --------------------------------------------------------


T0 = 1_700_006_400.0  # a UTC midnight
BAD: list[dict[str, Any]] = [
    {"input_tokens": 10**30, "output_tokens": 3, "cost_usd": 2e24},
    {"input_tokens": 1e30, "cost_usd": float("inf")},
    {"input_tokens": 2**62, "output_tokens": 2**62, "cost_usd": float("nan")},
    {"input_tokens": -5, "output_tokens": 2.5, "cost_usd": -1.0, "latency_ms": float("nan")},
    {"input_tokens": 7, "output_tokens": 2, "cost_usd": 0.25, "latency_ms": float("inf"), "ttft_ms": 1e300},
    {"input_tokens": 7, "output_tokens": 2, "cost_usd": 0.25, "cache_saved_usd": float("inf"), "cache": "hit"},
]


def test_records_with_impossible_numbers_are_stored_and_every_query_answers(store: Store) -> None:
    records = [
        TraceRecord(id=f"bad-{i}", started_at=T0 + 30 * i, tenant="t", model="m", **{"latency_ms": 5.0, **fields})
        for i, fields in enumerate(BAD)
    ]
    store.append_traces(records)  # one batch: no record may fail it
    rows = store.list_traces(TraceQuery(since=0, until=T0 + 86400, limit=100))
    assert len(rows) == len(BAD)
    for by in ("tenant", "model", "all"):
        for since, until in ((T0, T0 + 60), (T0 - 86400, T0 + 2 * 86400), (T0, T0 + 7200)):
            result = store.usage(UsageQuery(since=since, until=until, by=by))
            orjson.dumps([usage_view(r, by) for r in result])  # what GET /api/usage does: must not raise
            inside = [r for r in rows if since <= r.started_at < until]
            total = result[0] if result else None
            assert (total.calls if total else 0) == len(inside)
            if total is not None:  # the rollups still equal the trace rows as stored
                assert total.input_tokens == sum(r.input_tokens or 0 for r in inside)
                assert total.output_tokens == sum(r.output_tokens or 0 for r in inside)
                assert total.cost_usd == pytest.approx(sum(r.cost_usd or 0 for r in inside))
                assert math.isfinite(total.cost_usd) and math.isfinite(total.cache_saved_usd)
    assert all(0 <= (r.input_tokens or 0) <= 2**31 - 1 for r in rows)
    assert all(r.cost_usd is None or math.isfinite(r.cost_usd) for r in rows)
    series = store.usage(UsageQuery(since=T0, until=T0 + 600, by="tenant", grain="minute"))
    assert sum(r.calls for r in series) == len(BAD) and all(r.latency_p95_ms is not None for r in series)


def test_rollup_rows_written_before_the_check_never_break_a_query(store: Store, storage_url: str) -> None:
    """Rows as an older Keel left them: sums past int64 (SQLite kept them as REAL) or at its edge, which
    SQLite's SUM refuses to add ("integer overflow")."""
    store.append_traces([TraceRecord(id="ok", started_at=T0, tenant="t", input_tokens=1, output_tokens=1)])
    insert = (
        "INSERT INTO usage_minute (dim, bucket, tenant, value, calls, input_tokens) VALUES ('*', {m}, 't', '', 1, {m})"
    )
    if storage_url.startswith("sqlite:///"):
        legacy: list[tuple[int, float | int]] = [(60, 1e30), (120, 2**62), (180, 2**62)]
        with sqlite3.connect(storage_url.removeprefix("sqlite:///")) as conn:
            conn.executemany(insert.format(m="?"), [(int(T0) + at, n) for at, n in legacy])
    else:
        legacy = [(60, 2**62), (120, 2**62), (180, 2**62)]  # BIGINT holds each; their SUM is past int64
        with psycopg.connect(storage_url, autocommit=True) as pg:
            for at, n in legacy:
                pg.execute(insert.format(m="%s"), (int(T0) + at, n))
    for by in ("tenant", "all"):
        (row,) = store.usage(UsageQuery(since=T0, until=T0 + 300, by=by))  # minutes: where those rows are
        orjson.dumps(usage_view(row, by))
        assert (row.calls, row.input_tokens) == (4, 2**63 - 1)
