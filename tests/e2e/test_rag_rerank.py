"""RAG reranking over real HTTP: a collection's `rerank` setting (POST, PUT/DELETE …/rerank) makes the
search ask a chat alias — here the fake upstream, scripted to grade — and reorders the hits as graded;
a garbage, late or failed answer skips reranking with a reason while the hits still come back in fused
order; a request overrides or turns off the setting; a chat `rag` call's retrieval span shows the
rerank; /metrics counts the outcomes."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson

from keel.rag.index import ChunkIn, DocumentRef, Index, IndexSpec
from keel.testing import FakeUpstream, Script
from tests.conftest import base_config, until
from tests.e2e.test_rag_search import keel

DOCS = {
    "handbook": "Vacation policy: employees get 25 vacation days per year.",
    "runbook": "Vacation on-call swaps: engineers arrange vacation cover before vacation days.",
    "travel": "Travel policy: book vacation travel through the portal.",
}
SETTING = {"model": "gpt-4o-mini", "top_n": 3, "weight": 1.0, "timeout_s": 30}


def seed(store: Any) -> None:
    async def body() -> None:
        index = Index(store)
        await index.ensure("t1", "kb", IndexSpec("hash:256", {}))
        for doc_id, text in DOCS.items():
            ref = DocumentRef("t1", "kb", doc_id, 1, doc_id.title(), {}, (), (), None, time.time(), f"f/{doc_id}.md")
            await index.replace(ref, [ChunkIn(0, text, ("Policies",), doc_id, len(text.split()))])
        await index.aclose()

    asyncio.run(body())


def grades(*g: int) -> Script:
    return Script(text=orjson.dumps({"grades": list(g)}).decode())


def start(make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> tuple[Any, dict[str, str], dict[str, str]]:
    gw = make_gateway(base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path))
    admin = {"authorization": f"Bearer {gw.admin}"}
    made = httpx.post(f"{gw.url}/api/rag/collections", json={"tenant": "t1", "name": "kb", "model": "hash:256",
                                                              "rerank": SETTING}, headers=admin)  # fmt: skip
    assert made.status_code == 201, made.text
    assert made.json()["rerank"] == {**SETTING, "weight": 1.0, "timeout_s": 30.0}
    seed(gw.runtime.store)
    return gw, admin, {"authorization": f"Bearer {gw.key}"}


def ids(body: dict[str, Any]) -> list[str]:
    return [h["document"]["id"] for h in body["data"]]


def test_search_reorders_as_graded_and_skips_bad_answers(make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> None:
    gw, admin, key = start(make_gateway, up, tmp_path)
    url = f"{gw.url}/api/rag/collections/kb/search"
    plain = httpx.post(url, json={"query": "vacation days", "rerank": False}, headers=key).json()
    fused = ids(plain)
    assert len(fused) == 3 and plain["rerank"] is None and up.requests == []

    up.script(grades(0, 1, 3))  # the passages go in fused order: the last one is the best
    body = httpx.post(url, json={"query": "vacation days"}, headers=key).json()
    assert body["rerank"]["outcome"] == "applied" and body["rerank"]["reason"] is None, body["rerank"]
    assert ids(body) == list(reversed(fused))
    assert [h["scores"]["rerank"] for h in body["data"]] == [1.0, 0.333333, 0.0]
    assert all("graded" in h["why"] and h["scores"]["fused"] is not None for h in body["data"])
    asked = up.requests[-1]["json"]
    assert asked["model"] == "gpt-4o-mini" and "Query: vacation days" in asked["messages"][1]["content"]
    assert all(f"[{n}] {d.title()}" in asked["messages"][1]["content"] for n, d in enumerate(fused, 1))

    up.script(grades(0, 1, 3))  # a person's search grades as the tenant's rerank service principal
    as_admin = httpx.post(url, json={"query": "vacation days", "tenant": "t1", "all": True}, headers=admin).json()
    assert as_admin["rerank"]["outcome"] == "applied" and ids(as_admin) == list(reversed(fused))
    grader = next(t for t in gw.traces() if t.id == as_admin["rerank"]["trace_id"])
    assert grader.key_id == "keel:rag-rerank" and grader.tenant == "t1"

    up.script(grades(3, 0, 3))
    top_1 = httpx.post(url, json={"query": "vacation days", "top_k": 1}, headers=key).json()
    assert ids(top_1) == [fused[0]]  # grades tie: fused order breaks it; top_k still cuts

    for answer, why in ((Script(text="the first one is best"), "bad_answer: the answer is not JSON"),
                        (grades(1, 2), "bad_answer: 2 grade(s) for 3 passage(s)"),
                        (grades(1, 2, 7), "bad_answer: grade 7")):  # fmt: skip
        up.script(answer)
        skipped = httpx.post(url, json={"query": "vacation days"}, headers=key)
        assert skipped.status_code == 200
        assert skipped.json()["rerank"]["outcome"] == "skipped" and why in skipped.json()["rerank"]["reason"]
        assert ids(skipped.json()) == fused and all(h["scores"]["rerank"] is None for h in skipped.json()["data"])

    up.script(*[Script(status=500)] * 4)
    failed = httpx.post(url, json={"query": "vacation days"}, headers=key).json()
    assert failed["rerank"]["outcome"] == "skipped" and failed["rerank"]["reason"].startswith("failed: HTTP 5")
    assert ids(failed) == fused
    up.reset()

    up.script(Script(delay=5, text='{"grades": [3, 3, 3]}'))
    late = httpx.post(url, json={"query": "vacation days", "rerank": {"timeout_s": 0.3}}, headers=key).json()
    assert late["rerank"]["outcome"] == "skipped" and late["rerank"]["reason"].startswith("timeout")
    assert ids(late) == fused

    metrics = httpx.get(f"{gw.url}/metrics").text
    for outcome, n in (("applied", 3), ("bad_answer", 3), ("failed", 1), ("timeout", 1)):
        assert f'keel_rag_rerank_total{{outcome="{outcome}"}} {n}' in metrics
    held = re.search(r"^keel_rag_in_process_bytes (\S+)$", metrics, re.M)  # SQLite: the build searched in process
    assert held and float(held.group(1)) > 0 and re.search(r"^keel_rag_in_process_builds 1(\.0)?$", metrics, re.M)


def test_overrides_and_the_setting_routes(make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> None:
    gw, admin, key = start(make_gateway, up, tmp_path)
    url = f"{gw.url}/api/rag/collections/kb/search"
    fused = ids(httpx.post(url, json={"query": "vacation days", "rerank": False}, headers=key).json())

    up.script(grades(0, 1, 3))
    kept = httpx.post(url, json={"query": "vacation days", "rerank": {"weight": 0}}, headers=key).json()
    assert kept["rerank"]["outcome"] == "applied" and kept["rerank"]["weight"] == 0.0
    assert ids(kept) == fused  # graded, but weight 0 leaves the fused order
    up.script(grades(3, 0))
    two = httpx.post(url, json={"query": "vacation days", "rerank": {"top_n": 2}}, headers=key).json()
    assert ids(two) == [fused[0], fused[1], fused[2]] and two["data"][2]["scores"]["rerank"] is None
    prompt = up.requests[-1]["json"]["messages"][1]["content"]
    assert "[2] " in prompt and "[3] " not in prompt  # two passages

    for bad, param in (({"top_n": 51}, "rerank.top_n"), ({"weight": 2}, "rerank.weight"),
                       ({"timeout_s": 0}, "rerank.timeout_s"), ({"size": 1}, "rerank.size"), ("yes", "rerank")):  # fmt: skip
        refused = httpx.post(url, json={"query": "x", "rerank": bad}, headers=key)
        assert refused.status_code == 400 and refused.json()["error"]["param"] == param, refused.text

    from keel.keys.auth import issue_key

    only_sim = issue_key(gw.runtime.store, "t1", name="sim only", models=("sim",)).key
    limited = httpx.post(url, json={"query": "vacation days"}, headers={"authorization": f"Bearer {only_sim}"})
    assert limited.status_code == 200 and ids(limited.json()) == fused  # the key may not call the grader's alias
    assert limited.json()["rerank"]["reason"].startswith("failed: HTTP 404"), limited.json()["rerank"]

    setting = f"{gw.url}/api/rag/collections/kb/rerank"
    dropped = httpx.delete(setting, params={"tenant": "t1"}, headers=admin)
    assert dropped.status_code == 200 and dropped.json()["rerank"] is None
    before = len(up.requests)
    assert httpx.post(url, json={"query": "vacation days"}, headers=key).json()["rerank"] is None
    assert len(up.requests) == before
    missing = httpx.post(url, json={"query": "x", "rerank": {"top_n": 2}}, headers=key)
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "rerank.model"

    put = httpx.put(setting, json={"tenant": "t1", "model": "gpt-4o-mini", "top_n": 2}, headers=admin)
    assert put.status_code == 200 and put.json()["rerank"] == {"model": "gpt-4o-mini", "top_n": 2, "weight": 0.7,
                                                                 "timeout_s": 10.0}  # fmt: skip
    up.script(grades(0, 3))
    assert ids(httpx.post(url, json={"query": "vacation days"}, headers=key).json())[0] == fused[1]
    bad = httpx.put(setting, json={"tenant": "t1", "model": "gpt-4o-mini", "top_n": 0}, headers=admin)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "top_n"
    bad = httpx.put(setting, json={"tenant": "t1"}, headers=admin)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "model"
    gone = httpx.put(f"{gw.url}/api/rag/collections/nope/rerank", json={"tenant": "t1", "model": "m"}, headers=admin)
    assert gone.status_code == 404
    assert httpx.put(setting, json={"model": "m"}).status_code == 401
    again = httpx.post(f"{gw.url}/api/rag/collections", json={"tenant": "t1", "name": "kb", "model": "hash:256",
                                                               "rerank": {"model": "other"}}, headers=admin)  # fmt: skip
    assert again.status_code == 409 and "/rerank" in again.text


def test_chat_rag_call_reranks_and_its_span_shows_it(make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> None:
    gw, _, key = start(make_gateway, up, tmp_path)
    store = gw.runtime.store
    url = f"{gw.url}/api/rag/collections/kb/search"
    fused = ids(httpx.post(url, json={"query": "How many vacation days do I get?", "rerank": False},
                           headers=key).json())  # fmt: skip
    client = openai.OpenAI(base_url=gw.base_url, api_key=gw.key)
    up.script(grades(0, 1, 3))
    response = client.chat.completions.create(
        model="sim",
        messages=[{"role": "user", "content": "How many vacation days do I get?"}],
        extra_body={"rag": {"collection": "kb", "top_k": 3}},
    )
    citations = (response.model_extra or {})["citations"]
    cited = [c["document_id"] for c in citations]
    assert cited == list(reversed(fused)) and citations[0]["score"] == 1.0  # the blended score (weight 1)
    chat = next(t for t in gw.traces() if t.alias == "sim")
    assert until(lambda: any(s.kind == "retrieval" for s in store.trace_spans(chat.id)))
    retrieval = next(s for s in store.trace_spans(chat.id) if s.kind == "retrieval")
    report = retrieval.attributes["rerank"]
    assert report["outcome"] == "applied" and report["model"] == "gpt-4o-mini" and report["trace_id"]
    assert [h["scores"]["rerank"] for h in retrieval.attributes["hits"]] == [1.0, 0.333333, 0.0]
    assert until(lambda: any(t.id == report["trace_id"] for t in gw.traces()))  # the grader's own call is traced

    off = client.chat.completions.create(
        model="sim",
        messages=[{"role": "user", "content": "How many vacation days do I get?"}],
        extra_body={"rag": {"collection": "kb", "top_k": 3, "rerank": False}},
    )
    assert [c["document_id"] for c in (off.model_extra or {})["citations"]] == fused
    try:
        client.chat.completions.create(
            model="sim",
            messages=[{"role": "user", "content": "x"}],
            extra_body={"rag": {"collection": "kb", "rerank": {"weight": -1}}},
        )
        raise AssertionError("a bad rerank override was accepted")
    except openai.BadRequestError as err:
        assert "rag.rerank.weight" in str(err)


def test_cli_eval_adds_a_reranked_row(up: FakeUpstream, tmp_path: Path) -> None:
    import yaml

    from keel.store.open import open_store

    config = tmp_path / "keel.yaml"
    config.write_text(yaml.safe_dump(base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path)))
    store = open_store(f"sqlite:///{tmp_path}/keel.db")
    try:
        seed(store)
    finally:
        store.close()

    code, out, _ = keel(config, "rag", "search", "kb", "vacation days", "--tenant", "t1", "--all", "--json")
    fused = ids(orjson.loads(out))
    assert code == 0 and len(fused) == 3
    (tmp_path / "q.jsonl").write_text('{"_id": "q1", "text": "vacation days"}\n{"_id": "q2", "text": "vacation"}\n')
    (tmp_path / "qrels.tsv").write_text(f"q1\t{fused[2]}\t1\nq2\t{fused[0]}\t1\n")
    up.script(grades(0, 0, 3), Script(text="I cannot grade these."))  # q1 graded; q2's answer is garbage
    argv = ("rag", "eval", "kb", "--tenant", "t1", "--queries", str(tmp_path / "q.jsonl"), "--qrels",
            str(tmp_path / "qrels.tsv"), "--rerank", "gpt-4o-mini", "--rerank-top-n", "3")  # fmt: skip
    code, out, _ = keel(config, *argv, "--json")
    scores = orjson.loads(out)
    assert code == 0, out
    assert scores["hybrid"]["mrr@10"] < 1.0  # q1's relevant document is third in fused order
    assert scores["hybrid + rerank gpt-4o-mini"]["mrr@10"] == 1.0  # graded first; q2 skipped keeps fused order
    assert scores["rerank_skipped"] == {"bad_answer": 1}
    assert [r["json"]["model"] for r in up.requests] == ["gpt-4o-mini", "gpt-4o-mini"]
    code, out, _ = keel(config, *argv[:-2], "--rerank-top-n", "99")
    assert code == 1
