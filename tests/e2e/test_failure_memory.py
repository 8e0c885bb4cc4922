"""A failed call must not keep its payload alive until a rare full collection.

`keel serve` freezes start-up objects and raises the collector's thresholds, so a reference cycle
through an error's traceback (error → frames → the request → … → the error) would keep a large
body in memory for a long while. Two tests: the mechanism (with the collector off, nothing a failed
call allocated in Keel's code is left once it has answered), and the effect (a real `keel serve`
process returns to its resident size after 100 failed 10 MB calls, the collector never run by hand).
"""

from __future__ import annotations

import gc
import subprocess
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from keel.testing import FakeUpstream, Script
from tests.conftest import Gateway
from tests.e2e.test_serve_process import KEEL, bootstrap_key, free_port, wait_healthy

MB = 1_000_000
BIG = "x" * (10 * MB)  # a 10 MB message: below the edge's body limit
BODY: Any = {"model": "main", "messages": [{"role": "user", "content": BIG}]}


@pytest.fixture(scope="module")
def quiet_upstream() -> Iterator[FakeUpstream]:
    """A fake upstream that does not keep the large bodies it is sent."""
    with FakeUpstream(max_recorded_bytes=10_000) as fake:
        yield fake


@pytest.fixture
def fake(quiet_upstream: FakeUpstream) -> FakeUpstream:
    quiet_upstream.reset()
    return quiet_upstream


def settings(fake: FakeUpstream, tmp: Path, **extra: Any) -> dict[str, Any]:
    return {
        "storage": {"url": f"sqlite:///{tmp}/keel.db"},
        # payloads off: a queued trace legitimately holds its request until written; this is about cycles
        "traces": {"spill_dir": str(tmp / "spill"), "flush_interval_ms": 10, "store_payloads": False},
        "resilience": {"backoff_ms": 1, "ttft_timeout_s": 2, "idle_timeout_s": 2},
        "providers": {
            "a": {"type": "openai", "base_url": fake.url + "/v1", "api_key": "sk-a"},
            "b": {"type": "anthropic", "base_url": fake.url + "/v1", "api_key": "sk-b"},
        },
        "models": {"main": {"targets": [{"provider": "a", "model": "gpt-4o-mini"}, {"provider": "b", "model": "c"}]}},
        **extra,
    }


def keel_allocations() -> int:
    """Bytes still allocated by Keel's own code (not the test's client, not the fake upstream)."""
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(True, "*/keel/*"), tracemalloc.Filter(False, "*/keel/testing/*")]
    )
    return sum(stat.size for stat in snapshot.statistics("filename"))


FAILURES = {  # the scripts, the status and a fragment of the answer
    "every target answers an error": (
        [Script(status=500)] * 2 + [Script(status=529)] * 2,
        503,
        b"(a: server; a: server; b: overloaded; b: overloaded)",
    ),
    # resumed on the Anthropic target with a prefill, which fails too: the stream ends with an error event
    "the stream is cut after content": ([Script(cut_after=1)] + [Script(status=500)] * 2, 200, b'"code":"network"'),
}


@pytest.mark.parametrize("failure", list(FAILURES))
def test_a_failed_call_leaves_nothing_of_its_payload_without_the_collector(
    make_gateway: Any, fake: FakeUpstream, tmp_path: Path, failure: str
) -> None:
    gw: Gateway = make_gateway(settings(fake, tmp_path))
    stream = failure == "the stream is cut after content"
    headers = {"authorization": f"Bearer {gw.key}"}
    with httpx.Client(timeout=30) as client:
        scripts, status, fragment = FAILURES[failure]

        def fail() -> None:
            fake.script(*scripts)
            r = client.post(gw.base_url + "/chat/completions", json={**BODY, "stream": stream}, headers=headers)
            assert (r.status_code, fragment in r.content) == (status, True), r.content[-300:]
            assert len(fake.requests) == len(scripts) and all(sent["size"] > 10 * MB for sent in fake.requests)
            fake.reset()

        fail()  # warm up: imports, pools, caches
        gc.disable()  # (no collection first: it would only surface earlier tests' garbage)
        tracemalloc.start()
        try:
            before = keel_allocations()
            fail()
            deadline = time.monotonic() + 5
            while keel_allocations() - before > MB and time.monotonic() < deadline:
                time.sleep(0.05)  # the trace record leaves through the writer's queue
            left = keel_allocations() - before
        finally:
            tracemalloc.stop()
            gc.enable()
    assert left < MB, f"{left / MB:.1f} MB of a failed call's allocations are still alive"


# ---- a real `keel serve` process ---------------------------------------------------------------


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_keel_serve_returns_to_its_memory_after_100_failed_10mb_calls(fake: FakeUpstream, tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "keel.yaml").write_text(yaml.safe_dump(settings(fake, tmp_path, server={"port": port})))
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*KEEL, "serve"], cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        url = f"http://127.0.0.1:{port}"
        key = bootstrap_key(proc, log)
        wait_healthy(proc, url, log)
        fake.script(*[Script(status=500)] * 1000)  # the OpenAI target, then the Anthropic one: all fail
        body = httpx.Request("POST", "/", json=BODY).read()  # encoded once, sent 100 times
        headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
        with httpx.Client(base_url=url, timeout=30) as client:

            def fail() -> None:
                assert client.post("/v1/chat/completions", content=body, headers=headers).status_code >= 500

            for _ in range(5):  # warm up: the allocator's heap grows to hold one call
                fail()
            baseline = rss(proc.pid)
            peak = baseline
            for i in range(100):
                fail()
                peak = max(peak, rss(proc.pid))
                assert peak - baseline < 800 * MB, f"{(peak - baseline) / MB:.0f} MB kept after {i + 1} calls"
            after = rss(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    print(f"\nRSS baseline {baseline / MB:.0f} MB, peak {peak / MB:.0f} MB, after 100 calls {after / MB:.0f} MB")
    assert after - baseline < 60 * MB, f"{(after - baseline) / MB:.0f} MB more than before 100 failed calls"
