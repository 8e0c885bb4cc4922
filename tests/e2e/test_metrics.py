"""`/metrics` over real HTTP: the openai SDK drives the gateway, Prometheus's own parser reads the scrape.

The numbers are checked against what happened: the calls made, the stored trace rows (their error
kinds, tokens, cost), a stream's time to first token, a breaker opened by a failing upstream.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from keel.testing import FakeUpstream, Script
from keel.traces.metrics import Metrics
from keel.types import TraceRecord
from tests.conftest import Gateway, base_config

ASK: Any = [{"role": "user", "content": "hello there"}]
Samples = dict[str, list[tuple[dict[str, str], float]]]


def parse(text: str) -> Samples:
    """Every sample by its name (e.g. keel_calls_total, keel_request_duration_seconds_bucket)."""
    out: Samples = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name].append((s.labels, s.value))
    return out


def scrape(gw: Gateway, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.get(gw.url + "/metrics", headers=headers or {}, timeout=5)


def total(samples: Samples, name: str, **match: str) -> float:
    return sum(v for labels, v in samples.get(name, []) if all(labels.get(k) == m for k, m in match.items()))


def settled(gw: Gateway, calls: int) -> Samples:
    """The scrape once `calls` calls have been counted and their traces written (a stream is counted when it
    ends, just after the client sees it; the trace writer flushes in the background after that)."""
    deadline = time.monotonic() + 5
    while True:
        samples = parse(scrape(gw).text)
        counted = total(samples, "keel_calls_total") >= calls
        written = total(samples, "keel_traces_written_total") >= calls and total(samples, "keel_trace_queue_depth") == 0
        if (counted and written) or time.monotonic() > deadline:
            return samples
        time.sleep(0.02)


def check_histogram(samples: Samples, name: str) -> float:
    """Buckets are cumulative and end at +Inf == _count; returns the summed _count."""
    series: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = defaultdict(list)
    for labels, v in samples[name + "_bucket"]:
        key = tuple(sorted((k, x) for k, x in labels.items() if k != "le"))
        series[key].append((float(labels["le"]), v))
    counts = {tuple(sorted(labels.items())): v for labels, v in samples[name + "_count"]}
    assert set(series) == set(counts)
    for key, buckets in series.items():
        values = [v for _, v in sorted(buckets)]
        assert values == sorted(values), f"{name} buckets not monotonic: {values}"
        assert sorted(buckets)[-1][0] == math.inf and values[-1] == counts[key]
    return sum(counts.values())


@pytest.fixture
def gw(make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> Gateway:
    raw = base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path)
    raw["resilience"] = {"backoff_ms": 1, "breaker": {"failures": 3, "cooldown_s": 30}}
    return make_gateway(raw)  # type: ignore[no-any-return]


def test_calls_tokens_cost_errors_and_histograms_match_what_happened(gw: Gateway, up: FakeUpstream) -> None:
    with openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0) as c:
        for _ in range(5):
            c.chat.completions.create(model="gpt-4o-mini", messages=ASK)
        before = parse(scrape(gw).text)
        chunks = list(c.chat.completions.create(model="gpt-4o-mini", messages=ASK, stream=True))
        assert chunks
        up.script(Script(status=400, error_code="invalid_value"))
        with pytest.raises(openai.BadRequestError):
            c.chat.completions.create(model="gpt-4o-mini", messages=ASK)
    s = settled(gw, 7)
    rows = gw.traces()
    assert len(rows) == 7
    assert total(s, "keel_calls_total") == 7
    assert total(s, "keel_calls_total", alias="gpt-4o-mini", provider="oai", status="ok") == 6
    assert total(s, "keel_calls_total", alias="gpt-4o-mini", provider="oai", status="error") == 1
    failed = next(r for r in rows if r.status == "error")
    assert total(s, "keel_errors_total") == 1
    assert total(s, "keel_errors_total", alias="gpt-4o-mini", kind=str(failed.error_kind)) == 1
    for kind, field in (("input", "input_tokens"), ("output", "output_tokens")):
        assert total(s, "keel_tokens_total", type=kind) == sum(getattr(r, field) or 0 for r in rows) > 0
    assert total(s, "keel_cost_usd_total") == pytest.approx(sum(r.cost_usd or 0 for r in rows))
    assert check_histogram(s, "keel_request_duration_seconds") == 7
    ttft_before = before["keel_time_to_first_token_seconds_count"]
    ttft = check_histogram(s, "keel_time_to_first_token_seconds")
    assert ttft == sum(1 for r in rows if r.ttft_ms is not None)
    assert ttft == sum(v for _, v in ttft_before) + 1  # the stream
    assert total(s, "keel_request_duration_seconds_sum") == pytest.approx(sum(r.latency_ms or 0 for r in rows) / 1000)
    assert total(s, "keel_trace_queue_depth") == 0 and total(s, "keel_traces_written_total") == 7
    assert total(s, "keel_breaker_state", target="oai/gpt-4o-mini") == 0  # closed


def test_a_failing_upstream_opens_the_breaker_gauge(gw: Gateway, up: FakeUpstream) -> None:
    up.script(*[Script(status=503)] * 20)
    failures = 0
    with openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0) as c:
        for _ in range(4):
            with pytest.raises(openai.APIStatusError):
                c.chat.completions.create(model="gpt-4o-mini", messages=ASK)
            failures += 1
    s = settled(gw, failures)
    assert total(s, "keel_breaker_state", target="oai/gpt-4o-mini") == 2  # open
    assert total(s, "keel_breaker_state", target="sim/simulated-1") == 0
    kinds = defaultdict(int)
    for r in gw.traces():
        kinds[r.error_kind] += 1
    assert {labels["kind"]: v for labels, v in s["keel_errors_total"]} == kinds
    assert total(s, "keel_calls_total", status="error") == failures


def test_require_token_guards_the_scrape(make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> None:
    raw = base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path)
    raw["metrics"] = {"require_token": True}
    gw = make_gateway(raw)
    assert scrape(gw).status_code == 401
    assert scrape(gw, {"authorization": "Bearer wrong"}).status_code == 401
    ok = scrape(gw, {"authorization": f"Bearer {gw.admin}"})
    assert ok.status_code == 200 and ok.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "keel_calls_total" in parse(ok.text) or "# TYPE keel_calls_total counter" in ok.text


def test_metrics_can_be_turned_off(make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> None:
    raw = base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path)
    raw["metrics"] = {"enabled": False}
    gw = make_gateway(raw)
    assert scrape(gw).status_code == 404


def test_tenant_label_only_when_asked(make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> None:
    raw = base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path)
    raw["metrics"] = {"tenant_label": True}
    gw = make_gateway(raw)
    with openai.OpenAI(base_url=gw.base_url, api_key=gw.key, max_retries=0) as c:
        c.chat.completions.create(model="sim", messages=ASK)
    s = settled(gw, 1)
    assert total(s, "keel_calls_total", tenant="t1", alias="sim") == 1
    assert total(s, "keel_request_duration_seconds_count", tenant="t1") == 1


def test_label_values_are_escaped() -> None:
    m = Metrics()
    odd = 'a "quoted"\\alias\nwith a newline'
    m.observe(
        TraceRecord(id="1", started_at=0, alias=odd, provider="p", status="error", error_kind="timeout", latency_ms=12)
    )
    s = parse(m.render().decode())
    assert total(s, "keel_calls_total", alias=odd, status="error") == 1
    assert total(s, "keel_errors_total", alias=odd, kind="timeout") == 1
    assert check_histogram(s, "keel_request_duration_seconds") == 1
    assert total(s, "keel_request_duration_seconds_bucket", alias=odd, le="0.01") == 0
    assert total(s, "keel_request_duration_seconds_bucket", alias=odd, le="0.025") == 1
