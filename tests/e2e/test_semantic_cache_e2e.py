"""The semantic cache over real HTTP with the real local model (all-MiniLM-L6-v2 in numpy).

A paraphrase of a kept question is answered from the cache; the same words in another tenant,
alias, system prompt, conversation or with tools never are; and vectors of two embedding models
never meet, even in one vector file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from keel.testing import FakeUpstream
from tests.conftest import Gateway
from tests.e2e.test_cache_e2e import ask, cache_config, second_tenant, settle

ASKED = "How do I cancel my subscription?"
PARAPHRASE = "How can I cancel my subscription?"  # cosine ≈ 0.995 with ASKED under MiniLM
UNRELATED = "What is the capital of France?"
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}


def semantic_config(up: FakeUpstream, tmp: Path, vectors: str, **semantic: Any) -> dict[str, Any]:
    raw = cache_config(up, tmp, f"sqlite:///{tmp}/cache.db")
    raw["cache"]["semantic"] = {"enabled": True, "threshold": 0.95, "vectors_url": vectors, **semantic}
    return raw


@pytest.fixture(params=["memory", "sqlite"])
def vectors_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/vectors.db"


@pytest.fixture
def gw(make_gateway: Any, up: FakeUpstream, tmp_path: Path, vectors_url: str) -> Gateway:
    return make_gateway(semantic_config(up, tmp_path, vectors_url))  # type: ignore[no-any-return]


def test_a_paraphrase_is_answered_from_the_cache_with_its_similarity(gw: Gateway, up: FakeUpstream) -> None:
    first, _ = ask(gw, ASKED)
    settle(gw)
    second, h = ask(gw, PARAPHRASE, stream=True)
    assert second == first == f"echo: {ASKED}"
    kind, similarity = h["x-keel-cache"].split("; similarity=")
    assert kind == "semantic" and 0.95 <= float(similarity) <= 1.0
    assert len(up.requests) == 1
    _, h = ask(gw, UNRELATED)
    assert h["x-keel-cache"] == "miss" and len(up.requests) == 2


@pytest.mark.parametrize(
    "variant",
    [
        {"system": "You are a pirate."},
        {"model": "twin"},
        {"history": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
        {"max_tokens": 7},
        {"tools": [TOOL]},
    ],
    ids=["system", "alias", "prefix", "params", "tools"],
)
def test_a_paraphrase_in_another_partition_is_a_miss(gw: Gateway, up: FakeUpstream, variant: dict[str, Any]) -> None:
    ask(gw, ASKED)
    settle(gw)
    _, h = ask(gw, PARAPHRASE, **variant)
    assert h["x-keel-cache"] == "miss", variant
    assert len(up.requests) == 2


def test_a_paraphrase_from_another_tenant_is_a_miss(gw: Gateway, up: FakeUpstream) -> None:
    ask(gw, ASKED)
    settle(gw)
    _, h = ask(gw, PARAPHRASE, key=second_tenant(gw))
    assert h["x-keel-cache"] == "miss" and len(up.requests) == 2


def test_tools_match_semantically_only_when_configured(make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> None:
    gw = make_gateway(semantic_config(up, tmp_path, "memory://", with_tools=True))
    ask(gw, ASKED, tools=[TOOL])
    settle(gw)
    _, h = ask(gw, PARAPHRASE, tools=[TOOL])
    assert h["x-keel-cache"].startswith("semantic") and len(up.requests) == 1


def test_vectors_of_another_embedding_model_never_match(make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> None:
    vectors = f"sqlite:///{tmp_path}/vectors.db"
    local = make_gateway(semantic_config(up, tmp_path, vectors))
    ask(local, ASKED)
    settle(local)
    assert local.runtime.cache_stage is not None
    (tmp_path / "b").mkdir()
    other = make_gateway(semantic_config(up, tmp_path / "b", vectors, embedder="embed"))  # same vectors, other model
    _, h = ask(other, PARAPHRASE)
    assert h["x-keel-cache"] == "miss"
    assert [r["path"] for r in up.requests].count("/v1/embeddings") == 1  # the paraphrase was embedded upstream


SWAPPED = ("Book flights from New York to Florida", "Book flights from Florida to New York")  # cosine ≈ 0.995


def test_verify_turns_down_a_word_swap_the_embedding_cannot_see(gw: Gateway, up: FakeUpstream) -> None:
    ask(gw, SWAPPED[0])
    settle(gw)
    text, h = ask(gw, SWAPPED[1])
    assert (text, h["x-keel-cache"]) == (f"echo: {SWAPPED[1]}", "miss")
    t = next(t for t in gw.traces() if t.id == h["x-keel-trace-id"])
    assert t.tags["keel.cache_rejected"] >= 0.95  # the neighbour was found, and refused
    assert gw.runtime.cache_stage is not None and gw.runtime.cache_stage.counts.verify_rejects == 1


def test_without_verify_the_same_swap_would_be_served(make_gateway: Any, up: FakeUpstream, tmp_path: Path) -> None:
    gw = make_gateway(semantic_config(up, tmp_path, "memory://", verify=False))
    ask(gw, SWAPPED[0])
    settle(gw)
    text, h = ask(gw, SWAPPED[1])
    assert h["x-keel-cache"].startswith("semantic") and text == f"echo: {SWAPPED[0]}"  # the wrong answer


def test_the_int8_embedder_serves_paraphrases_with_its_own_vectors_and_threshold(
    make_gateway: Any, up: FakeUpstream, tmp_path: Path
) -> None:
    """`embedder: local-int8`: the same model with int8 weights, its own model id (fp32 rows in the same
    vector file never match it) and its own calibrated threshold when none is set."""
    vectors = f"sqlite:///{tmp_path}/vectors.db"
    fp32 = make_gateway(semantic_config(up, tmp_path, vectors))
    ask(fp32, ASKED)
    settle(fp32)
    (tmp_path / "b").mkdir()
    raw = semantic_config(up, tmp_path / "b", vectors, embedder="local-int8")
    del raw["cache"]["semantic"]["threshold"]
    raw["cache"]["read_timeout_ms"] = 30_000  # a loaded CI machine: this test is about matching, not speed
    int8 = make_gateway(raw)
    assert int8.runtime.config.cache.semantic.served_threshold == 0.966
    _, h = ask(int8, PARAPHRASE)
    assert h["x-keel-cache"] == "miss"  # the fp32 row of ASKED is another model's
    settle(int8)
    text, h = ask(int8, "How can I cancel my subscription ?")
    kind, similarity = h["x-keel-cache"].split("; similarity=")
    assert kind == "semantic" and float(similarity) >= 0.966 and text == f"echo: {PARAPHRASE}"
    assert len(up.requests) == 2
