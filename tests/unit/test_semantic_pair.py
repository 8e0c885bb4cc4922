"""The semantic cache's pair decision (keel/cache/pair.py) and the threshold choice (keel/cache/calibrate.py).

Pure functions: no model. The quality figures on real pairs are in bench/semantic_eval.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from keel.cache import calibrate, pair


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("How do I reset my password?", "How can I reset my password?", True),
        ("What is the capital of France?", "what's the capital of france", True),
        ("Summarise this email in 3 bullet points", "summarise this email in 3 bullet points please", True),
        ("salt and pepper steak recipe", "pepper and salt steak recipe", True),  # "X and Y" reordered
        ("flights from New York to Florida", "flights from Florida to New York", False),  # swapped content words
        ("Convert 100 USD to EUR", "Convert 250 USD to EUR", False),  # another number
        ("the 7th round, 77th pick", "the 77th round, 7th pick", False),  # the same numbers, swapped
        ("Don't delete the production database.", "Delete the production database.", False),  # negation
        ("Is it safe? It is not.", "Is it not safe? It is not.", False),  # a second negation
        ("the dog bit the man the dog", "the dog the man bit the dog", False),  # repeated words are compared too
        ("a racial riot, a historical bowl", "a historic riot, a racist bowl", False),  # word stems swapped
        # a rewording that changes many words may reorder the rest; a swap keeps the words and changes the order
        ("flights from New York to Florida", "cheapest direct flights to Florida leaving New York tomorrow", True),
    ],
)
def test_verify_rejects_what_embeddings_miss(a: str, b: str, same: bool) -> None:
    assert pair.verify(a, b) is same
    assert pair.verify(b, a) is same


def test_identical_texts_score_their_cosine() -> None:
    assert pair.adjusted("How do I cancel my plan?", "How do I cancel my plan?", 0.97) == pytest.approx(0.97)


def test_one_sided_names_cost_score() -> None:
    """Two questions alike but for a name on each side score under the same pair with the names shared."""
    shared = pair.adjusted("Best rehab centre in Fresno County?", "Best rehab centre in Fresno County", 0.97)
    swapped = pair.adjusted("Best rehab centre in Fresno County?", "Best rehab centre in Mono County", 0.97)
    assert shared is not None and swapped is not None and swapped < shared


def test_a_pronoun_change_is_measured_not_guessed() -> None:
    """On both dev sets a changed pronoun ("How do you…" / "How do I…") more often keeps the question than not,
    so it weighs a little for the pair; `verify` and the threshold do the refusing."""
    assert pair.FEATURES.index("pronoun_changed") == 5 and pair.WEIGHTS.coefficients[5] > 0


def test_a_failed_verify_never_serves() -> None:
    assert pair.adjusted("Convert 100 USD to EUR", "Convert 250 USD to EUR", 0.999) is None


def test_the_boost_is_bounded_by_the_search_margin() -> None:
    for a, b in [("How do I reset my password?", "How can I reset my password?"), ("a b c", "a b c d e f")]:
        score = pair.adjusted(a, b, 0.5)
        assert score is not None and score <= 0.5 + pair.MAX_BOOST + 1e-9


def test_the_chosen_threshold_keeps_false_hits_within_the_budget() -> None:
    scores: list[float | None] = [0.99, 0.97, 0.95, 0.93, None, 0.91, 0.90, 0.80, 0.70, 0.60]
    labels = [True, True, False, True, False, True, False, False, False, True]
    c = calibrate.choose(scores, labels, 0.2, confident=False)  # 5 negatives: one may be served
    assert c.threshold == 0.901 and (c.false_hits, c.true_hits) == (1, 4)
    strict = calibrate.choose(scores, labels, 0.0, confident=False)
    assert strict.threshold == 0.951 and (strict.false_hits, strict.true_hits) == (0, 2)
    sure = calibrate.choose(scores, labels, 0.2)  # 1 of 5 reaches 62% at the 95% bound: serve no negative
    assert sure.threshold == 0.951 and not sure.confident


def test_a_confident_choice_needs_enough_negatives() -> None:
    labels = [False] * 1000 + [True] * 10
    scores: list[float | None] = [i / 1000 for i in range(1000)] + [0.999] * 10
    measured = calibrate.choose(scores, labels, 0.01, confident=False)
    sure = calibrate.choose(scores, labels, 0.01)
    assert measured.false_hits == 10 and measured.interval[1] > 0.01
    assert sure.false_hits < 10 and sure.confident and sure.threshold > measured.threshold


def test_wilson_interval() -> None:
    low, high = calibrate.wilson(0, 100)
    assert low == 0.0 and high == pytest.approx(0.037, abs=0.001)
    low, high = calibrate.wilson(5, 100)
    assert low == pytest.approx(0.0215, abs=0.001) and high == pytest.approx(0.1118, abs=0.001)


def test_pairs_files_with_and_without_a_header(tmp_path: Path) -> None:
    quora = tmp_path / "q.tsv"
    quora.write_text("id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n1\t1\t2\tA?\tB?\t1\n", encoding="utf-8")
    bare = tmp_path / "b.tsv"
    bare.write_text("A?\tB?\t0\n", encoding="utf-8")
    assert calibrate.read_pairs(quora) == [calibrate.LabelledPair("A?", "B?", True)]
    assert calibrate.read_pairs(bare) == [calibrate.LabelledPair("A?", "B?", False)]
    broken = tmp_path / "x.tsv"
    broken.write_text("sentence1\tsentence2\tlabel\nA?\tB?\tyes\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2"):
        calibrate.read_pairs(broken)
