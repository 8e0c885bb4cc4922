"""Async calls over real HTTP: `Prefer: respond-async` (or `x-keel-async: true`, or an async_only
rule) → 202 with a `keel.job`; a worker runs the call through the pipeline; `GET /v1/jobs/{id}`
shows the calling key its own job and, when done, the answer. A webhook receiver (a real HTTP server
on 127.0.0.1) checks each delivery's signature, fails the first attempt, and still gets the result
once."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from keel.keys.auth import issue_key
from keel.store.protocols import JobQuery
from keel.testing import FakeUpstream
from tests.conftest import Gateway, base_config, until

SECRET = "whsec-test-" + "x" * 16
ASYNC = {"prefer": "respond-async"}
CHAT = {"model": "sim", "messages": [{"role": "user", "content": "tell me later"}]}


class Receiver:
    """A webhook endpoint: verifies signatures, answers the first `fail_first` attempts with 500,
    and accepts each delivery id once."""

    def __init__(self, fail_first: int = 1) -> None:
        self.attempts: list[dict[str, Any]] = []
        self.accepted: dict[str, dict[str, Any]] = {}
        self.fail_first = fail_first
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["content-length"]))
                signed = self.headers["x-keel-timestamp"].encode() + b"." + raw
                expected = "sha256=" + hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
                valid = hmac.compare_digest(expected, self.headers.get("x-keel-signature", ""))
                delivery = self.headers.get("x-keel-delivery-id", "")
                outer.attempts.append({"delivery": delivery, "valid": valid})
                if not valid:
                    status = 401
                elif len(outer.attempts) <= outer.fail_first:
                    status = 500
                else:
                    outer.accepted.setdefault(delivery, json.loads(raw))  # dedupe on the delivery id
                    status = 200
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def config(up: FakeUpstream, tmp_path: Path, storage: str | None = None, **async_calls: Any) -> dict[str, Any]:
    raw = base_config(up, storage or f"sqlite:///{tmp_path}/keel.db", tmp_path)
    raw["models"]["big"] = {"targets": [{"provider": "sim", "model": "simulated-1"}]}
    raw["jobs"] = {"poll_s": 0.2, "backoff_s": 0.1, "backoff_max_s": 0.5}
    raw["async_calls"] = {
        "webhook_secret": SECRET,
        "allow_private_webhooks": True,
        "async_only_aliases": ["big"],
        "async_only_max_tokens": 4000,
        **async_calls,
    }
    return raw


@pytest.fixture
def gw(make_gateway: Any, up: FakeUpstream, tmp_path: Path, storage_url: str) -> Gateway:
    """A gateway on SQLite and on PostgreSQL."""
    return make_gateway(config(up, tmp_path, storage_url))  # type: ignore[no-any-return]


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def done(gw: Gateway, job: dict[str, Any], key: str | None = None) -> dict[str, Any]:
    seen: list[dict[str, Any]] = []

    def check() -> bool:
        r = httpx.get(job["status_url"], headers=auth(key or gw.key))
        assert r.status_code == 200, r.text
        seen[:] = [r.json()]
        return seen[0]["status"] in ("completed", "failed", "cancelled")

    assert until(check, 30), seen
    return seen[0]


def test_respond_async_answers_202_and_the_job_holds_the_answer(gw: Gateway) -> None:
    r = httpx.post(f"{gw.base_url}/chat/completions", json=CHAT, headers={**auth(gw.key), **ASYNC})

    assert r.status_code == 202, r.text
    job = r.json()
    assert job["object"] == "keel.job" and job["id"] and job["status"] in ("queued", "in_progress")
    assert job["status_url"] == f"{gw.base_url}/jobs/{job['id']}" == r.headers["location"]
    assert r.headers["preference-applied"] == "respond-async"
    finished = done(gw, job)

    assert finished["status"] == "completed" and finished["error"] is None
    answer = finished["response"]
    assert answer["status_code"] == 200 and answer["body"]["object"] == "chat.completion"
    assert answer["body"]["choices"][0]["message"]["content"]
    traces = {t.id: t for t in gw.traces()}
    assert traces[answer["request_id"]].tenant == "t1" and traces[answer["request_id"]].status == "ok"

    gw.runtime.store.create_tenant("t2")
    stranger = issue_key(gw.runtime.store, "t2").key
    same_tenant = issue_key(gw.runtime.store, "t1", name="another key").key
    for key in (stranger, same_tenant):
        assert httpx.get(job["status_url"], headers=auth(key)).status_code == 404
    assert httpx.get(f"{gw.base_url}/jobs/nope", headers=auth(gw.key)).status_code == 404


def test_embeddings_with_x_keel_async_and_a_failed_call_in_openai_format(gw: Gateway) -> None:
    r = httpx.post(
        f"{gw.base_url}/embeddings",
        json={"model": "embed", "input": ["a", "b"]},
        headers={**auth(gw.key), "x-keel-async": "true"},
    )
    assert r.status_code == 202
    assert done(gw, r.json())["response"]["body"]["data"][1]["index"] == 1

    gw.runtime.store.create_tenant("t3")
    key = issue_key(gw.runtime.store, "t3", models=("gpt-4o-mini",)).key
    r = httpx.post(f"{gw.base_url}/chat/completions", json=CHAT, headers={**auth(key), **ASYNC})
    failed = done(gw, r.json(), key)
    assert failed["status"] == "failed" and failed["response"]["status_code"] == 404
    assert failed["error"]["code"] == "model_not_found" and "sim" in failed["error"]["message"]


def test_what_cannot_run_later_is_refused_now(gw: Gateway, make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> None:
    url, h = f"{gw.base_url}/chat/completions", {**auth(gw.key), **ASYNC}
    cases = [
        ({"model": "sim", "messages": "nope"}, h, "messages"),
        ({**CHAT, "stream": True}, h, "stream"),
        ({**CHAT, "webhook_url": "ftp://example.com/x"}, h, "webhook_url"),
    ]
    for body, headers, param in cases:
        r = httpx.post(url, json=body, headers=headers)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    assert httpx.post(url, json=CHAT, headers={**ASYNC}).status_code == 401

    strict = make_gateway(config(up, tmp_path / "strict", allow_private_webhooks=False))
    for hook in ("http://127.0.0.1:9/x", "http://localhost/x", "http://[::1]/x", "https://10.1.2.3/x"):
        r = httpx.post(f"{strict.base_url}/chat/completions", json={**CHAT, "webhook_url": hook},
                       headers={**auth(strict.key), **ASYNC})  # fmt: skip
        assert r.status_code == 400 and "allow_private_webhooks" in r.json()["error"]["message"], hook
    unsigned = make_gateway(config(up, tmp_path / "unsigned", webhook_secret=None))
    r = httpx.post(f"{unsigned.base_url}/chat/completions", json={**CHAT, "webhook_url": "https://example.com/hook"},
                   headers={**auth(unsigned.key), **ASYNC})  # fmt: skip
    assert r.status_code == 400 and "async_calls.webhook_secret" in r.json()["error"]["message"]


def test_async_only_alias_and_large_max_tokens_go_to_the_queue_and_say_why(gw: Gateway) -> None:
    url = f"{gw.base_url}/chat/completions"
    r = httpx.post(url, json={**CHAT, "model": "big"}, headers=auth(gw.key))
    assert r.status_code == 202 and "alias 'big' is async_only" in r.headers["x-keel-async-reason"]
    assert done(gw, r.json())["status"] == "completed"

    r = httpx.post(url, json={**CHAT, "max_tokens": 5000}, headers=auth(gw.key))
    assert r.status_code == 202 and "max_tokens 5000 is above" in r.headers["x-keel-async-reason"]
    assert httpx.post(url, json={**CHAT, "max_tokens": 100}, headers=auth(gw.key)).status_code == 200


def test_idempotency_key_returns_the_same_job(gw: Gateway) -> None:
    h = {**auth(gw.key), **ASYNC, "idempotency-key": "order-42"}
    first = httpx.post(f"{gw.base_url}/chat/completions", json=CHAT, headers=h).json()
    again = httpx.post(f"{gw.base_url}/chat/completions", json=CHAT, headers=h).json()
    assert first["id"] == again["id"]


def test_webhook_is_signed_retried_and_delivered_once(gw: Gateway, receiver: Receiver) -> None:
    body = {**CHAT, "webhook_url": receiver.url}
    r = httpx.post(f"{gw.base_url}/chat/completions", json=body, headers={**auth(gw.key), **ASYNC})
    assert r.status_code == 202
    job = r.json()
    assert job["webhook_url"] == receiver.url
    assert until(lambda: len(receiver.accepted) == 1, 30), receiver.attempts

    polled = done(gw, job)
    [(delivery, event)] = receiver.accepted.items()
    assert event["event"] == "keel.job.completed" and event["id"] == delivery
    assert event["data"]["id"] == job["id"] and event["data"]["status"] == "completed"
    assert event["data"]["status_url"] == job["status_url"]
    assert event["data"]["response"] == polled["response"]  # the webhook and the poll tell one answer
    assert all(a["valid"] for a in receiver.attempts)
    assert len(receiver.attempts) == 2 and {a["delivery"] for a in receiver.attempts} == {delivery}
    queue = gw.runtime.jobs
    assert queue is not None
    deliveries = queue.store.list_jobs(JobQuery(kind="webhook.deliver"))
    assert len(deliveries) == 1 and deliveries[0].attempts == 2
    assert until(lambda: queue.store.list_jobs(JobQuery(kind="webhook.deliver"))[0].state == "succeeded", 10)


def test_webhook_url_from_the_header(gw: Gateway, receiver: Receiver) -> None:
    receiver.fail_first = 0
    h = {**auth(gw.key), "x-keel-webhook-url": receiver.url}  # a webhook alone asks for an async answer
    r = httpx.post(f"{gw.base_url}/chat/completions", json=CHAT, headers=h)
    assert r.status_code == 202 and "webhook_url given" in r.headers["x-keel-async-reason"]
    job = r.json()
    assert until(lambda: len(receiver.accepted) == 1, 30)
    assert next(iter(receiver.accepted.values()))["data"]["id"] == job["id"]


def test_a_call_failing_on_every_provider_is_retried_then_fails_with_the_last_answer(
    make_gateway: Any, up: FakeUpstream, tmp_path: Path
) -> None:
    raw = config(up, tmp_path)
    raw["providers"]["down"] = {"type": "simulated", "faults": ["server"]}
    raw["models"]["down"] = {"targets": [{"provider": "down", "model": "simulated-1"}]}
    raw["jobs"]["max_attempts"] = 3
    raw["resilience"] = {"retries_per_target": 0}
    gw = make_gateway(raw)
    r = httpx.post(f"{gw.base_url}/chat/completions", json={**CHAT, "model": "down"}, headers={**auth(gw.key), **ASYNC})

    failed = done(gw, r.json())

    assert failed["status"] == "failed" and failed["attempts"] == 3  # the queue retried it twice, with backoff
    assert failed["response"]["status_code"] == 502 and failed["error"]["type"] == "upstream_error"
