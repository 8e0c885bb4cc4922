"""The reranker's pure parts: the strict grade parser, the setting's parser and per-request override,
the prompt, and the blend of fused and rerank scores."""

from __future__ import annotations

import pytest

from keel.rag.rerank import (
    BadGrades,
    RerankSpec,
    blend,
    choose,
    parse_grades,
    parse_spec,
    prompt,
)
from keel.rag.search import BadSearch, Hit


def hit(n: int, fused: float, text: str = "text") -> Hit:
    return Hit(n, f"d{n}", f"T{n}", 1, 0, text, (), {}, "", 0.0,
               {"lexical": None, "vector": None, "fused": fused, "rerank": None, "freshness": None},
               {"lexical": None, "vector": None}, "kept")  # fmt: skip


@pytest.mark.parametrize(
    ("text", "n", "grades"),
    [
        ('{"grades": [3, 0, 2]}', 3, [3, 0, 2]),
        ('  {"grades":[1]}\n', 1, [1]),
        ('```json\n{"grades": [0, 3]}\n```', 2, [0, 3]),
        ('```\n{"grades": [2]}\n```', 1, [2]),
    ],
)
def test_grades_that_parse(text: str, n: int, grades: list[int]) -> None:
    assert parse_grades(text, n) == grades


@pytest.mark.parametrize(
    ("text", "n", "fault"),
    [
        ("", 1, "not JSON"),
        ("Passage 2 is best.", 2, "not JSON"),
        ('Sure! {"grades": [1, 2]}', 2, "not JSON"),
        ("[1, 2]", 2, "not an object"),
        ('{"grades": [1, 2], "why": "x"}', 2, "not an object"),
        ('{"scores": [1, 2]}', 2, "not an object"),
        ('{"grades": "1,2"}', 2, "not an object"),
        ('{"grades": [1, 2]}', 3, "2 grade(s) for 3 passage(s)"),
        ('{"grades": [1, 2, 3, 0]}', 3, "4 grade(s) for 3 passage(s)"),
        ('{"grades": [1, 4]}', 2, "grade 4"),
        ('{"grades": [1, -1]}', 2, "grade -1"),
        ('{"grades": [1, 2.5]}', 2, "grade 2.5"),
        ('{"grades": [true, 2]}', 2, "grade True"),
        ('{"grades": ["3", 2]}', 2, "grade '3'"),
        ('{"grades": [null]}', 1, "grade None"),
    ],
)
def test_grades_that_do_not(text: str, n: int, fault: str) -> None:
    with pytest.raises(BadGrades) as err:
        parse_grades(text, n)
    assert fault in str(err.value)


def test_spec_defaults_checks_and_overrides() -> None:
    assert parse_spec({"model": "m"}) == RerankSpec("m", 20, 0.7, 10.0)
    stored = RerankSpec("m", 10, 0.5, 5.0)
    assert choose(None, stored) is stored
    assert choose(False, stored) is None
    assert choose({"weight": 1}, stored) == RerankSpec("m", 10, 1.0, 5.0)
    assert choose(None, None) is None
    for raw, param in (
        ({"top_n": 5}, "rerank.model"),
        ({"model": ""}, "rerank.model"),
        ({"model": "m", "top_n": 0}, "rerank.top_n"),
        ({"model": "m", "top_n": 51}, "rerank.top_n"),
        ({"model": "m", "top_n": True}, "rerank.top_n"),
        ({"model": "m", "weight": 1.5}, "rerank.weight"),
        ({"model": "m", "weight": "1"}, "rerank.weight"),
        ({"model": "m", "timeout_s": 0}, "rerank.timeout_s"),
        ({"model": "m", "timeout_s": 121}, "rerank.timeout_s"),
        ({"model": "m", "k": 1}, "rerank.k"),
    ):
        with pytest.raises(BadSearch) as err:
            choose(raw, None)
        assert err.value.param == param
    with pytest.raises(BadSearch) as err:
        choose(True, stored, "rag.rerank")
    assert err.value.param == "rag.rerank"
    with pytest.raises(BadSearch) as err:
        parse_spec({"top_n": 3}, "")
    assert err.value.param == "model"


def test_blend_weights_grades_against_fused_scores() -> None:
    hits = (hit(1, 0.9), hit(2, 0.6), hit(3, 0.3), hit(4, 0.2))
    graded = blend(hits, [0, 3, 1], 1.0, 10)
    assert [h.chunk_id for h in graded] == [2, 3, 1, 4]  # the ungraded fourth stays last
    assert graded[0].scores["rerank"] == 1.0 and graded[0].scores["final"] == 1.0
    assert graded[3].scores["rerank"] is None and "final" not in graded[3].scores
    assert [h.chunk_id for h in blend(hits, [0, 3, 1], 0.0, 10)] == [1, 2, 3, 4]
    half = blend(hits, [0, 1, 3], 0.5, 2)  # finals: 1: .5, 2: .5·1/3+.5·2/3 = .5, 3: .5+.5·1/3 ≈ .667
    assert [h.chunk_id for h in half] == [3, 1]  # the tie between 1 and 2 keeps fused order; top_k cuts
    assert half[0].scores["final"] == pytest.approx(0.666667, abs=1e-6)


def test_prompt_numbers_the_passages_and_bounds_each() -> None:
    messages = prompt("why?", [hit(1, 1.0, "short  text\nhere"), hit(2, 0.5, "x" * 5000)])
    user = messages[1]["content"]
    assert user.startswith("Query: why?") and "[1] T1: short text here" in user
    assert "[2] T2: " + "x" * 1200 in user and "x" * 1201 not in user
    assert '{"grades"' in messages[0]["content"]
