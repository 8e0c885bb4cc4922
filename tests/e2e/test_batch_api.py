"""The OpenAI Batch API over real HTTP, driven by the official `openai` SDK: upload a JSONL file,
create a batch, poll it to `completed`, download its output and error files. Lines run through the
gateway pipeline (traced with `batch_id` and `custom_id`) on the gateway's embedded job workers; a
malformed line lands in the error file under its custom_id; cancel; paged listing; tenants never see
each other's files or batches."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from keel.keys.auth import issue_key
from keel.testing import FakeUpstream
from tests.conftest import Gateway, base_config, until
from tests.e2e.test_serve_process import KEEL


def config(up: FakeUpstream, tmp_path: Path, storage: str | None = None, **batches: Any) -> dict[str, Any]:
    raw = base_config(up, storage or f"sqlite:///{tmp_path}/keel.db", tmp_path)
    raw["traces"]["blobs_url"] = f"file://{tmp_path}/blobs"  # files' bytes too (PostgreSQL's default is ./.keel)
    raw["providers"]["slow"] = {"type": "simulated", "latency_ms": 150}
    raw["models"]["slow"] = {"targets": [{"provider": "slow", "model": "simulated-1"}]}
    raw["jobs"] = {"poll_s": 0.2}
    raw["batches"] = batches
    return raw


def line(custom_id: str, content: str = "hello", model: str = "sim", **body: Any) -> dict[str, Any]:
    payload = {"model": model, "messages": [{"role": "user", "content": content}], **body}
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": payload}


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(x).encode() + b"\n" for x in lines)


def client(gw: Gateway, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=key or gw.key, max_retries=0)


def finished(c: openai.OpenAI, batch_id: str, timeout: float = 60.0) -> Any:
    done: list[Any] = []

    def check() -> bool:
        b = c.batches.retrieve(batch_id)
        done[:] = [b]
        return b.status in ("completed", "failed", "expired", "cancelled")

    assert until(check, timeout), f"batch {batch_id} still {done[0].status if done else '?'}"
    return done[0]


def parse(text: str) -> dict[str, dict[str, Any]]:
    rows = [json.loads(x) for x in text.splitlines() if x.strip()]
    by_id = {r["custom_id"]: r for r in rows}
    assert len(by_id) == len(rows), "a custom_id appears twice"
    return by_id


@pytest.fixture
def gw(make_gateway: Any, up: FakeUpstream, tmp_path: Path, storage_url: str) -> Gateway:
    """A gateway on SQLite and on PostgreSQL (the job queue's LISTEN/NOTIFY wake-ups included)."""
    return make_gateway(config(up, tmp_path, storage_url))  # type: ignore[no-any-return]


def test_sdk_uploads_runs_and_downloads_a_batch_with_a_malformed_line_in_the_error_file(gw: Gateway) -> None:
    c = client(gw)
    good = [line(f"req-{i}", f"question {i}") for i in range(20)]
    bad = [
        line("bad-body", model="sim", messages="not a list"),  # not a chat request: its own error line
        line("no-alias", model="no-such-alias"),
    ]
    data = jsonl(good[:10] + bad[:1] + good[10:] + bad[1:])

    f = c.files.create(file=("requests.jsonl", data), purpose="batch")
    assert (f.object, f.purpose, f.bytes, f.filename, f.status) == (
        "file",
        "batch",
        len(data),
        "requests.jsonl",
        "processed",
    )
    assert c.files.retrieve(f.id).id == f.id
    assert c.files.content(f.id).content == data

    b = c.batches.create(
        input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h", metadata={"run": "nightly"}
    )
    assert b.status in ("validating", "in_progress") and b.metadata == {"run": "nightly"}
    b = finished(c, b.id)

    assert b.status == "completed", b.errors
    assert (b.request_counts.total, b.request_counts.completed, b.request_counts.failed) == (22, 20, 2)
    assert b.completed_at is not None and b.in_progress_at is not None and b.finalizing_at is not None
    out = parse(c.files.content(b.output_file_id).text)
    assert set(out) == {f"req-{i}" for i in range(20)}
    first = out["req-3"]
    assert first["error"] is None and first["id"].startswith("batch_req_")
    assert first["response"]["status_code"] == 200
    assert first["response"]["body"]["object"] == "chat.completion"
    assert first["response"]["body"]["choices"][0]["message"]["content"]
    assert [x["custom_id"] for x in map(json.loads, c.files.content(b.output_file_id).text.splitlines())] == [
        f"req-{i}" for i in range(20)
    ]  # input order
    errors = parse(c.files.content(b.error_file_id).text)
    assert set(errors) == {"bad-body", "no-alias"}
    assert errors["bad-body"]["response"]["status_code"] == 400
    assert "messages" in errors["bad-body"]["error"]["message"]
    assert errors["no-alias"]["response"]["status_code"] == 404
    assert c.files.retrieve(b.output_file_id).purpose == "batch_output"

    traces = [t for t in gw.traces() if t.tags.get("batch_id") == b.id]
    assert {t.tags["custom_id"] for t in traces} >= {f"req-{i}" for i in range(20)} | {"no-alias"}
    by_request = {t.id: t for t in traces}
    assert by_request[first["response"]["request_id"]].tags["custom_id"] == "req-3"
    assert all(t.tenant == "t1" for t in traces)


def test_upload_checks_every_line_and_names_the_bad_one(make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> None:
    gw = make_gateway(config(up, tmp_path, max_file_bytes=4096, max_lines=5))
    c = client(gw)
    cases = {
        b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}\nnot json\n': "Line 2 is not valid JSON",
        jsonl([line("a"), line("a")]): "Line 2: custom_id 'a' is used on line 1",
        jsonl([line("a"), {**line("b"), "method": "GET"}]): "Line 2: 'method'",
        jsonl([{**line("a"), "url": "/v1/responses"}]): "Line 1: 'url' must be one of",
        jsonl([{"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": []}]): "Line 1: 'body'",
        jsonl([line(str(i)) for i in range(6)]): "more than 5 requests (batches.max_lines)",
        b"\n\n": "no requests",
    }
    for data, message in cases.items():
        with pytest.raises(openai.BadRequestError) as caught:
            c.files.create(file=("x.jsonl", data), purpose="batch")
        assert message in str(caught.value), (data, caught.value)
    with pytest.raises(openai.APIStatusError) as big:
        c.files.create(file=("x.jsonl", jsonl([line("a", "x" * 5000)])), purpose="batch")
    assert big.value.status_code == 413 and "batches.max_file_bytes" in str(big.value)
    with pytest.raises(openai.BadRequestError, match="purpose"):
        c.files.create(file=("x.jsonl", jsonl([line("a")])), purpose="fine-tune")
    assert c.files.list().data == []


def test_a_file_for_another_endpoint_fails_the_batch_naming_the_lines(gw: Gateway) -> None:
    c = client(gw)
    f = c.files.create(file=("x.jsonl", jsonl([line("a"), line("b")])), purpose="batch")
    b = finished(c, c.batches.create(input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h").id)

    assert b.status == "failed" and b.failed_at is not None
    assert b.errors is not None and [e.line for e in b.errors.data] == [1, 2]
    assert b.errors.data[0].code == "mismatched_endpoint"
    with pytest.raises(openai.BadRequestError, match="endpoint"):
        c.batches.create(input_file_id=f.id, endpoint="/v1/completions", completion_window="24h")  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError, match="completion_window"):
        c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="1h")  # type: ignore[arg-type]


def test_embeddings_batch(gw: Gateway, up: FakeUpstream) -> None:
    c = client(gw)
    lines = [
        {
            "custom_id": f"e{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "embed", "input": f"text {i}"},
        }
        for i in range(3)
    ]
    f = c.files.create(file=("e.jsonl", jsonl(lines)), purpose="batch")
    b = finished(c, c.batches.create(input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h").id)

    assert b.status == "completed" and b.request_counts.completed == 3
    out = parse(c.files.content(b.output_file_id).text)
    assert out["e1"]["response"]["body"]["object"] == "list"
    assert len(out["e1"]["response"]["body"]["data"][0]["embedding"]) > 0


def test_cancel_stops_taking_lines_and_keeps_what_was_answered(
    make_gateway: Any, up: FakeUpstream, tmp_path: Path
) -> None:
    gw = make_gateway(config(up, tmp_path, concurrency=2))
    c = client(gw)
    f = c.files.create(file=("slow.jsonl", jsonl([line(f"s{i}", model="slow") for i in range(60)])), purpose="batch")
    b = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert until(lambda: c.batches.retrieve(b.id).request_counts.completed >= 2, 30)

    cancelled = c.batches.cancel(b.id)
    assert cancelled.status == "cancelling" and cancelled.cancelling_at is not None
    b = finished(c, b.id)

    assert b.status == "cancelled" and b.cancelled_at is not None
    out = parse(c.files.content(b.output_file_id).text)
    assert 2 <= len(out) < 60 and b.request_counts.completed == len(out)
    assert c.batches.cancel(b.id).status == "cancelled"  # again: unchanged
    done = finished(c, c.batches.create(input_file_id=c.files.create(
        file=("one.jsonl", jsonl([line("x")])), purpose="batch").id, endpoint="/v1/chat/completions",
        completion_window="24h").id)  # fmt: skip
    with pytest.raises(openai.ConflictError, match="completed"):
        c.batches.cancel(done.id)


def test_listing_pages_newest_first(gw: Gateway) -> None:
    c = client(gw)
    f = c.files.create(file=("x.jsonl", jsonl([line("a")])), purpose="batch")
    made = [
        c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h").id
        for _ in range(5)
    ]

    page = c.batches.list(limit=2)
    assert [b.id for b in page.data] == made[::-1][:2] and page.has_more
    second = c.batches.list(limit=2, after=page.data[-1].id)
    assert [b.id for b in second.data] == made[::-1][2:4]
    assert [b.id for b in c.batches.list(limit=2)] == made[::-1]  # the SDK's auto-paging follows `after`
    raw = httpx.get(f"{gw.base_url}/batches?limit=0", headers={"authorization": f"Bearer {gw.key}"})
    assert raw.status_code == 400 and raw.json()["error"]["param"] == "limit"
    for b in made:
        finished(c, b)
    files = c.files.list()
    assert f.id in [x.id for x in files.data]


def test_tenants_never_see_each_others_files_or_batches(gw: Gateway) -> None:
    gw.runtime.store.create_tenant("t2")
    other = client(gw, issue_key(gw.runtime.store, "t2", name="other").key)
    c = client(gw)
    f = c.files.create(file=("x.jsonl", jsonl([line("a")])), purpose="batch")
    b = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")

    for call in (
        lambda: other.files.retrieve(f.id),
        lambda: other.files.content(f.id),
        lambda: other.files.delete(f.id),
        lambda: other.batches.retrieve(b.id),
        lambda: other.batches.cancel(b.id),
        lambda: other.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert other.files.list().data == [] and other.batches.list().data == []
    b = finished(c, b.id)
    with pytest.raises(openai.NotFoundError):
        other.files.content(b.output_file_id)
    assert c.files.delete(f.id).deleted
    with pytest.raises(openai.NotFoundError):
        c.files.retrieve(f.id)


def test_batch_lines_yield_a_saturated_target_to_live_calls(
    make_gateway: Any, up: FakeUpstream, tmp_path: Path
) -> None:
    raw = config(up, tmp_path, concurrency=8)
    raw["models"]["slow"] = {"targets": [{"provider": "slow", "model": "simulated-1", "max_concurrency": 1}]}
    gw = make_gateway(raw)
    c = client(gw)
    f = c.files.create(file=("s.jsonl", jsonl([line(f"s{i}", model="slow") for i in range(24)])), purpose="batch")
    b = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert until(lambda: c.batches.retrieve(b.id).request_counts.completed >= 2, 30)

    # one line holds the slot, up to 7 wait for it at batches.priority (-10); the live call comes at 0
    live = c.chat.completions.with_raw_response.create(model="slow", messages=[{"role": "user", "content": "now"}])
    assert finished(c, b.id).status == "completed"

    traces = gw.traces()
    [mine] = [t for t in traces if t.id == live.headers["x-keel-trace-id"]]
    live_end = mine.started_at + (mine.latency_ms or 0) / 1000
    lines = [
        (t.started_at, t.started_at + (t.latency_ms or 0) / 1000) for t in traces if t.tags.get("batch_id") == b.id
    ]
    arrived = mine.started_at
    pending = [end for start, end in lines if start < arrived < end]  # in flight or waiting when the live call came
    overtaken = [end for end in pending if end > live_end]
    assert len(pending) >= 6 and len(overtaken) >= len(pending) - 2, (len(pending), len(overtaken))


def test_lines_over_the_keys_limits_wait_and_run_again(make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> None:
    raw = config(up, tmp_path, concurrency=6)
    raw["limits"] = {"defaults": [{"scope": ["key"], "concurrency": 2}]}
    gw = make_gateway(raw)
    c = client(gw)
    f = c.files.create(file=("l.jsonl", jsonl([line(f"l{i}", model="slow") for i in range(12)])), purpose="batch")
    b = finished(c, c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h").id)

    assert b.status == "completed" and (b.request_counts.completed, b.request_counts.failed) == (12, 0)
    mine = [t for t in gw.traces() if t.tags.get("batch_id") == b.id]
    refused = [t for t in mine if t.status == "error"]
    assert refused and len(mine) == 12 + len(refused)  # the limit refused some tries; each line then ran
    assert all("concurrency" in (t.error_message or "") for t in refused)


def test_keel_worker_runs_batches_and_one_whose_window_ended_expires(
    make_gateway: Any, up: FakeUpstream, tmp_path: Path
) -> None:
    idle = config(up, tmp_path)
    idle["jobs"]["enabled"] = False  # this gateway queues batches; a `keel worker` process runs them
    gw = make_gateway(idle)
    c = client(gw)
    f = c.files.create(file=("x.jsonl", jsonl([line("a"), line("b")])), purpose="batch")
    late = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert gw.runtime.store.update_batch(late.id, {"expires_at": time.time() - 1}) is not None  # a day went by
    fine = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert c.batches.retrieve(fine.id).status == "validating"

    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen([*KEEL, "worker"], cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        late_b, fine_b = finished(c, late.id), finished(c, fine.id)
        assert until(lambda: len([t for t in gw.traces() if t.tags.get("batch_id") == fine.id]) == 2, 10)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)

    assert late_b.status == "expired" and late_b.expired_at is not None, log.read_text()
    assert (late_b.request_counts.total, late_b.request_counts.completed, late_b.output_file_id) == (2, 0, None)
    assert fine_b.status == "completed" and fine_b.request_counts.completed == 2
    assert not [t for t in gw.traces() if t.tags.get("batch_id") == late.id]  # no line of the late batch ran


def test_a_tenant_purge_deletes_its_files_and_batches(gw: Gateway) -> None:
    c = client(gw)
    f = c.files.create(file=("x.jsonl", jsonl([line("a")])), purpose="batch")
    b = finished(c, c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h").id)
    blobs = gw.runtime.blobs
    assert blobs is not None and len(list(blobs.list("files/"))) == 2  # the input and the output file

    r = httpx.post(f"{gw.url}/api/tenants/t1/purge", json={}, headers={"authorization": f"Bearer {gw.admin}"})

    # rows per store: the batch and its line's result; the input and the output file
    assert r.status_code == 200 and (r.json()["counts"]["batches"], r.json()["counts"]["files"]) == (2, 2)
    store = gw.runtime.store
    assert store.get_file("t1", b.output_file_id) is None and store.list_batches("t1") == []
    with pytest.raises(openai.AuthenticationError):  # the tenant went whole, its keys too
        c.files.list()
    assert list(blobs.list("files/")) == []
