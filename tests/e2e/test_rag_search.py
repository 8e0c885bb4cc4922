"""RAG search through the gateway: a chat call with `rag` (extra_body) through the official openai SDK
returns citations of what its key may read, and its trace shows the retrieval span (`keel traces show`);
`POST /api/rag/collections/{c}/search` returns hits with scores per stage and why, as a key or as the
admin on behalf of a user; bad input is a 400 naming the field."""

from __future__ import annotations

import asyncio
import contextlib
import io
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson

from keel.cli.main import main as keel_main
from keel.rag.index import ChunkIn, DocumentRef, Index, IndexSpec
from keel.testing import FakeUpstream
from tests.conftest import base_config, until


def seed(store: Any) -> None:
    async def body() -> None:
        index = Index(store)
        await index.ensure("t1", "kb", IndexSpec("hash:256", {}))
        docs = [
            ("handbook", (), (), "Vacation policy: employees get 25 vacation days per year."),
            ("eng-runbook", (), ("eng",), "Vacation on-call swaps: engineers arrange on-call cover before vacation."),
            ("alice-review", ("alice",), (), "Alice salary review and vacation balance notes."),
            ("lunch", (), (), "The cafeteria serves lunch from noon."),
        ]
        for doc_id, users, groups, text in docs:
            ref = DocumentRef("t1", "kb", doc_id, 1, doc_id.title(), {"kind": "policy"}, users, groups, None,
                              time.time(), f"files/{doc_id}.md")  # fmt: skip
            await index.replace(ref, [ChunkIn(0, text, ("Policies",), doc_id, len(text.split()))])
        await index.aclose()

    asyncio.run(body())


def test_chat_with_rag_returns_citations_and_a_retrieval_span(
    make_gateway: Any, up: FakeUpstream, tmp_path: Path
) -> None:
    gw = make_gateway(base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path))
    store = gw.runtime.store
    seed(store)
    key_id = store.list_keys("t1")[0].id
    assert keel_main(["--config", str(tmp_path / "keel.yaml"), "rag", "groups", key_id, "--set", "eng"]) == 0
    client = openai.OpenAI(base_url=gw.base_url, api_key=gw.key)
    response = client.chat.completions.create(
        model="sim",
        messages=[{"role": "user", "content": "How many vacation days do I get?"}],
        extra_body={"rag": {"collection": "kb", "top_k": 3}},
    )
    citations = (response.model_extra or {})["citations"]
    cited = [c["document_id"] for c in citations]
    assert cited and cited[0] in ("handbook", "eng-runbook") and "alice-review" not in cited
    assert set(cited) <= {"handbook", "eng-runbook", "lunch"}
    first = citations[0]
    assert first["n"] == 1 and first["title"] and first["chunk"]["text"] and first["score"] > 0
    assert first["chunk"]["heading_path"] == ["Policies"]
    trace_id = gw.traces()[0].id

    def shown() -> str:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            keel_main(["--config", str(tmp_path / "keel.yaml"), "traces", "show", trace_id])
        return out.getvalue()

    assert until(lambda: "retrieval rag kb" in shown())
    assert cited[0] in shown()
    retrieval = next(s for s in store.trace_spans(trace_id) if s.kind == "retrieval")
    hits = retrieval.attributes["hits"]
    assert [h["document_id"] for h in hits] == cited and "group eng" in str([h["why"] for h in hits])
    assert retrieval.attributes["caller"] == {"user": None, "groups": ["eng"]}
    assert retrieval.attributes["half_life_days"] is None

    streamed = client.chat.completions.create(
        model="sim",
        messages=[{"role": "user", "content": "vacation"}],
        extra_body={"rag": {"collection": "kb", "top_k": 2, "freshness": {"half_life_days": 90}}},
        stream=True,
    )
    extras = [c.model_extra.get("citations") for c in streamed if c.model_extra and "citations" in c.model_extra]
    assert len(extras) == 1 and extras[0]


def test_search_api_as_key_and_as_admin(make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> None:
    gw = make_gateway(base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path))
    seed(gw.runtime.store)
    url = f"{gw.url}/api/rag/collections/kb/search"
    as_key = {"authorization": f"Bearer {gw.key}"}
    found = httpx.post(url, json={"query": "vacation", "top_k": 10}, headers=as_key)
    assert found.status_code == 200, found.text
    body = found.json()
    assert {h["document"]["id"] for h in body["data"]} == {"handbook", "lunch"}  # no groups yet: tenant-wide only
    hit = body["data"][0]
    assert hit["document"]["id"] == "handbook" and hit["ranks"]["lexical"] == 1
    assert set(hit["scores"]) == {"lexical", "vector", "fused", "rerank", "freshness"} and "whole tenant" in hit["why"]
    assert hit["scores"]["freshness"] is None
    decayed = httpx.post(url, json={"query": "vacation", "freshness": {"half_life_days": 30}}, headers=as_key).json()
    assert all(0 < h["scores"]["freshness"] <= 1 and "half-life 30 days" in h["why"] for h in decayed["data"])
    assert hit["document"]["metadata"] == {"kind": "policy"} and body["build"] and body["fusion"].startswith("convex")
    assert body["searched"] == "process" and body["candidates"]["documents"] == 2  # SQLite: held in process
    admin = {"authorization": f"Bearer {gw.admin}"}
    as_alice = httpx.post(url, json={"query": "vacation", "tenant": "t1", "user": "alice"}, headers=admin).json()
    assert {h["document"]["id"] for h in as_alice["data"]} == {"handbook", "alice-review", "lunch"}
    assert any("user alice" in h["why"] for h in as_alice["data"])
    filtered = httpx.post(url, json={"query": "lunch", "tenant": "t1", "all": True, "filters": {"kind": "menu"}},
                          headers=admin)  # fmt: skip
    assert filtered.json()["data"] == []
    refused = httpx.post(url, json={"query": "x", "user": "alice"}, headers=as_key)
    assert refused.status_code == 403
    bad = httpx.post(url, json={"query": "x", "filters": {"year": {"$near": 1}}}, headers=as_key)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "filters.year.$near"
    bad = httpx.post(url, json={"query": "x", "freshness": {"half_life_days": -1}}, headers=as_key)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "freshness.half_life_days"
    bad = httpx.post(url, json={"query": "x", "top_k": 1000}, headers=as_key)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "top_k"
    missing = httpx.post(f"{gw.url}/api/rag/collections/nope/search", json={"query": "x"}, headers=as_key)
    assert missing.status_code == 404
    assert httpx.post(url, json={"query": "x"}).status_code == 401


def keel(config: Path, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = keel_main(["--config", str(config), *argv])
    return code, out.getvalue(), err.getvalue()


def test_cli_search_reindex_builds_and_eval(up: FakeUpstream, tmp_path: Path) -> None:
    import yaml

    from keel.store.open import open_store

    config = tmp_path / "keel.yaml"
    config.write_text(yaml.safe_dump(base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path)))
    store = open_store(f"sqlite:///{tmp_path}/keel.db")
    try:
        seed(store)
    finally:
        store.close()
    code, out, _ = keel(config, "rag", "search", "kb", "vacation days", "--tenant", "t1", "--user", "alice")
    assert code == 0 and "[1] handbook" in out and "alice-review" in out and "eng-runbook" not in out
    code, out, _ = keel(
        config, "rag", "search", "kb", "vacation", "--tenant", "t1", "--filters", '{"kind": {"$bad": 1}}'
    )
    assert code == 1
    code, out, err = keel(config, "rag", "reindex", "kb", "--tenant", "t1", "--model", "hash:128")
    assert code == 0, err
    assert "4/4 chunks" in err and "hash-128@1" in out
    code, out, _ = keel(config, "rag", "builds", "kb", "--tenant", "t1", "--json")
    states = sorted((b["state"], b["model"], b["chunks"]) for b in orjson.loads(out))
    assert states == [("active", "hash-128@1", 4), ("retired", "hash-256@1", 4)]
    code, _, err = keel(config, "rag", "reindex", "kb", "--tenant", "t1", "--model", "nope")
    assert code == 1 and "unknown embedding model" in err
    with sqlite3.connect(tmp_path / "keel.db") as db:  # the retired build ended two minutes ago
        db.execute("UPDATE rag_builds SET ended_at = ended_at - 120 WHERE state = 'retired'")
    code, out, err = keel(config, "rag", "reindex", "kb", "--tenant", "t1", "--model", "hash:64")
    assert code == 0 and "dropped 1 build(s) retired or failed over 60 s ago" in err, err
    code, out, _ = keel(config, "rag", "builds", "kb", "--tenant", "t1", "--json")
    states = sorted((b["state"], b["model"]) for b in orjson.loads(out))
    assert states == [("active", "hash-64@1"), ("retired", "hash-128@1")]  # the one within its grace stays
    (tmp_path / "q.jsonl").write_text('{"_id": "q1", "text": "vacation days"}\n{"_id": "q2", "text": "lunch"}\n')
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\thandbook\t2\nq2\tlunch\t1\n")
    code, out, _ = keel(config, "rag", "eval", "kb", "--tenant", "t1", "--queries", str(tmp_path / "q.jsonl"),
                        "--qrels", str(tmp_path / "qrels.tsv"), "--json")  # fmt: skip
    scores = orjson.loads(out)
    assert code == 0 and set(scores) == {"hybrid", "BM25 only", "vector only"}
    assert scores["hybrid"]["ndcg@10"] == 1.0 and scores["hybrid"]["queries"] == 2
    code, out, _ = keel(config, "rag", "eval", "kb", "--tenant", "t1", "--queries", str(tmp_path / "q.jsonl"),
                        "--qrels", str(tmp_path / "qrels.tsv"))  # fmt: skip
    assert code == 0 and "NDCG@10" in out and "BM25 only" in out


def test_a_collections_freshness_defaults_apply_to_searches_and_requests_override_them(
    make_gateway: Any, up: FakeUpstream, tmp_path: Path
) -> None:
    gw = make_gateway(base_config(up, f"sqlite:///{tmp_path}/keel.db", tmp_path))
    admin = {"authorization": f"Bearer {gw.admin}"}
    collections = f"{gw.url}/api/rag/collections"
    spec = {"tenant": "t1", "name": "news", "model": "hash:256"}
    defaults = {"half_life_days": 30, "exclude_expired": False}
    made = httpx.post(collections, json={**spec, "freshness": defaults}, headers=admin)
    assert made.status_code == 201, made.text
    assert made.json()["freshness"] == {"half_life_days": 30.0, "exclude_expired": False}
    assert httpx.get(f"{collections}/news", params={"tenant": "t1"}, headers=admin).json()["freshness"] == {
        "half_life_days": 30.0,
        "exclude_expired": False,
    }
    again = httpx.post(collections, json={**spec, "freshness": {"half_life_days": 7}}, headers=admin)
    assert again.status_code == 409 and "freshness" in again.text
    bad = httpx.post(collections, json={**spec, "name": "x", "freshness": {"exclude_expired": 1}}, headers=admin)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "freshness.exclude_expired"
    bad = httpx.post(collections, json={**spec, "name": "x", "freshness": {"half_life_days": 0}}, headers=admin)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "freshness.half_life_days"

    now = time.time()

    async def fill() -> None:
        index = Index(gw.runtime.store)
        await index.ensure("t1", "news", IndexSpec("hash:256", {}))
        for doc_id, age_days, valid_until in (("fresh", 1, None), ("old", 60, None), ("expired", 2, now - 60)):
            text = "Quarterly earnings report for the board."
            ref = DocumentRef("t1", "news", doc_id, 1, "Earnings", {}, (), (), valid_until, now - age_days * 86400,
                              f"news/{doc_id}")  # fmt: skip
            await index.replace(ref, [ChunkIn(0, text, (), doc_id, len(text.split()))])
        await index.aclose()

    asyncio.run(fill())
    url = f"{collections}/news/search"
    as_key = {"authorization": f"Bearer {gw.key}"}
    found = httpx.post(url, json={"query": "quarterly earnings"}, headers=as_key).json()["data"]
    assert {h["document"]["id"] for h in found} == {"fresh", "old", "expired"}  # the collection keeps expired ones
    assert found[-1]["document"]["id"] == "old" and all("half-life 30 days" in h["why"] for h in found)
    asked = {"query": "quarterly earnings", "freshness": {"exclude_expired": True, "half_life_days": None}}
    plain = httpx.post(url, json=asked, headers=as_key).json()["data"]
    assert {h["document"]["id"] for h in plain} == {"fresh", "old"}
    assert all(h["scores"]["freshness"] is None for h in plain)
    client = openai.OpenAI(base_url=gw.base_url, api_key=gw.key)
    response = client.chat.completions.create(
        model="sim",
        messages=[{"role": "user", "content": "What did the quarterly earnings report say?"}],
        extra_body={"rag": {"collection": "news", "top_k": 3}},
    )
    cited = [c["document_id"] for c in (response.model_extra or {})["citations"]]
    assert sorted(cited) == ["expired", "fresh", "old"] and cited[-1] == "old"  # the defaults, in a chat too
