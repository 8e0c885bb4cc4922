"""Whether a kept question may answer a new one: the semantic cache's pair decision, pure Python.

The vector index finds the nearest kept question (cosine similarity ≥ the alias's threshold − MAX_BOOST);
this module decides on the pair of texts. Embeddings barely see word order, numbers, negation or a changed
name ("flights from New York to Florida" and back score 0.995), and a high cosine alone also joins
different questions on one topic. So a pair is served only when

- `verify` passes: the same numbers in the same order, as many negations, and, when the two use nearly
  the same content words (Dice ≥ REWORDED: a swap, not a rewording), those words in the same order.
  Words match on their first four letters (so "racial … historical" / "historic … racist" is a swap),
  repeated words occurrence by occurrence, and "X and Y" against "Y and X" is in order; and
- `adjusted` reaches the threshold: the cosine plus the lexical evidence of a logistic model over
  FEATURES (content-word and bigram overlap, one-sided words and names, pronoun and question-word
  changes, length ratio), in cosine units: 0 for identical texts, at most +MAX_BOOST.

WEIGHTS were fitted offline by `python bench/semantic_eval.py --fit` on the tuning halves of PAWS-Wiki
dev and QQP dev; the figures (held-out halves, across sets) are in decision 0033-semantic-pair-decision.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

FEATURES = (
    "similarity",  # cosine of the two embeddings
    "content_dice",  # shared content words / all content words (multisets, 2|A∩B| / (|A|+|B|))
    "one_sided",  # content words on one side only, log(1 + n)
    "bigram_dice",  # shared adjacent word pairs, stop words included: a word swap breaks them
    "names_one_sided",  # capitalised words or numbers-with-letters on one side only, log(1 + n)
    "pronoun_changed",  # the set of personal pronouns and possessives differs ("your website" / "my website")
    "question_changed",  # the question words differ (why / how / what ...)
    "length_ratio",  # shorter / longer, in words
)


@dataclass(frozen=True, slots=True)
class Weights:
    """A logistic model's coefficients, one per FEATURES; only their ratios to the similarity's matter here."""

    bias: float
    coefficients: tuple[float, ...]


# fitted by `python bench/semantic_eval.py --fit` (tuning halves of PAWS dev and QQP dev); see decision 0033
WEIGHTS = Weights(-9.8537, (14.4058, -1.4159, -0.3198, -0.026, -0.2096, 0.197, -0.0476, -0.3733))
IDENTICAL = (1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)  # FEATURES of a text paired with itself, similarity aside
MAX_BOOST = 0.05  # lexical evidence may raise a pair's score by at most this much over its cosine
DEFAULT_THRESHOLD = 0.97  # cache.semantic.threshold: what `keel cache calibrate` picks on PAWS dev (QQP dev: 0.963)


def adjusted(kept: str, asked: str, similarity: float) -> float | None:
    """The pair's score in cosine units (serve when ≥ the alias's threshold), or None when `verify` fails.

    The score is the cosine plus the logistic model's lexical evidence divided by the cosine's own weight:
    0 for two identical texts, lower the more they differ in what the embedding does not see. The vector
    search may therefore stop at threshold − MAX_BOOST.
    """
    a, b = _Text.of(kept), _Text.of(asked)
    if not _verified(a, b):
        return None
    return adjusted_from(_features(a, b, similarity))


def adjusted_from(features: tuple[float, ...], weights: Weights | None = None) -> float:
    w = weights or WEIGHTS
    evidence = sum(c * (x - i) for c, x, i in zip(w.coefficients[1:], features[1:], IDENTICAL[1:], strict=True))
    return features[0] + min(MAX_BOOST, evidence / w.coefficients[0])


def features(a: str, b: str, similarity: float) -> tuple[float, ...]:
    """The pair's FEATURES, in order."""
    return _features(_Text.of(a), _Text.of(b), similarity)


def verify(a: str, b: str) -> bool:
    """The same numbers in the same order, as many negations, shared content words in the same order."""
    return _verified(_Text.of(a), _Text.of(b))


# ---- text analysis --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Text:
    tokens: list[str]  # lower-cased words and numbers, "n't" split off as "not"
    numbers: list[str]
    negations: int
    content: list[str]  # content words, light-stemmed, in order
    conjoined: list[str]  # the same, with each "X and Y" of two single content words sorted
    names: set[str]  # capitalised words past the first, and words with digits, lower-cased
    pronouns: frozenset[str]
    questions: frozenset[str]

    @classmethod
    def of(cls, text: str) -> _Text:
        raw = _TOKEN.findall(text.replace("n't", " not").replace("N'T", " NOT"))
        tokens = [t.lower() for t in raw]
        numbers = [t for t in tokens if t[0].isdigit()]
        names = {t.lower() for i, t in enumerate(raw) if (i > 0 and t[0].isupper() and t.lower() not in _STOPWORDS)}
        names |= {t for t in tokens if any(c.isdigit() for c in t) and any(c.isalpha() for c in t)}
        return cls(
            tokens,
            numbers,
            sum(t in _NEGATIONS for t in tokens),
            [_stem(t) for t in tokens if _is_content(t)],
            _sorted_conjuncts(tokens),
            names,
            frozenset(t for t in tokens if t in _PRONOUNS),
            frozenset(t for t in tokens if t in _QUESTION_WORDS),
        )


def _sorted_conjuncts(tokens: list[str]) -> list[str]:
    """Content words in order, where "X and Y" / "X or Y" of two single content words reads as sorted."""
    words = list(tokens)
    for i in range(1, len(words) - 1):
        if words[i] in ("and", "or") and _is_content(words[i - 1]) and _is_content(words[i + 1]):
            words[i - 1], words[i + 1] = sorted((words[i - 1], words[i + 1]))
    return [_stem(t) for t in words if _is_content(t)]


def _is_content(token: str) -> bool:
    return token[0].isalpha() and token not in _STOPWORDS and token not in _NEGATIONS


def _stem(word: str) -> str:
    """Words match on their first STEM letters: "historic" and "historical", "racial" and "racist" (a swap
    PAWS makes: "racial … historical" / "historic … racist"), "questions" and "question"."""
    return word[:STEM]


def _occurrences(words: list[str]) -> list[tuple[str, int]]:
    """Each word with its occurrence number, so repeated words are matched first to first, second to second."""
    seen: Counter[str] = Counter()
    out = []
    for w in words:
        out.append((w, seen[w]))
        seen[w] += 1
    return out


REWORDED = 0.8  # below this content-word Dice the texts are a rewording, not a swap: order may change


def _verified(a: _Text, b: _Text) -> bool:
    if not _same_facts(a, b):
        return False
    ca, cb = Counter(a.content), Counter(b.content)
    total = len(a.content) + len(b.content)
    dice = 2 * sum((ca & cb).values()) / total if total else 1.0
    return dice < REWORDED or _discordant(a, b) == 0.0  # a word swap keeps the words and changes their order


def _same_facts(a: _Text, b: _Text) -> bool:
    """The same numbers in the same order and as many negations."""
    return a.numbers == b.numbers and a.negations == b.negations


def _discordant(a: _Text, b: _Text) -> float:
    """The share of pairs of shared content words (matched occurrence by occurrence) in the other order;
    "X and Y" against "Y and X" counts as in order."""
    return min(_inversions(a.content, b.content), _inversions(a.conjoined, b.conjoined))


def _inversions(a: list[str], b: list[str]) -> float:
    where_b = {item: i for i, item in enumerate(_occurrences(b))}
    positions = [where_b[item] for item in _occurrences(a) if item in where_b]
    n = len(positions)
    if n < 2:
        return 0.0
    inversions = sum(x > y for i, x in enumerate(positions) for y in positions[i + 1 :])
    return inversions / (n * (n - 1) / 2)


def _features(a: _Text, b: _Text, similarity: float) -> tuple[float, ...]:
    ca, cb = Counter(a.content), Counter(b.content)
    shared = sum((ca & cb).values())
    total = len(a.content) + len(b.content)
    one_sided = total - 2 * shared
    ba, bb = Counter(zip(a.tokens, a.tokens[1:], strict=False)), Counter(zip(b.tokens, b.tokens[1:], strict=False))
    bigrams = sum(ba.values()) + sum(bb.values())
    longer = max(len(a.tokens), len(b.tokens), 1)
    return (
        similarity,
        2 * shared / total if total else 1.0,
        math.log1p(one_sided),
        2 * sum((ba & bb).values()) / bigrams if bigrams else 1.0,
        math.log1p(len(a.names ^ b.names)),
        float(a.pronouns != b.pronouns),
        float(a.questions != b.questions),
        min(len(a.tokens), len(b.tokens)) / longer,
    )


STEM = 4
_TOKEN = re.compile(r"\d+(?:[.,]\d+)*[^\W_]*|[^\W\d_]+")  # numbers (1,000.5 whole, 7th) and runs of letters
_NEGATION_WORDS = "no not never none nobody nothing neither nor nowhere without cannot"
_PRONOUN_WORDS = "i me my mine we us our ours you your yours he him his she her hers they them their theirs"
_QUESTION_TEXT = "what why how when where who whom which whose"
_STOPWORD_TEXT = """a an the and or but if then else of in on at to from by for with as is are was were be been being this that
    these those it its he she they them his her their we our you your i me my do does did done have has had who whom
    which what when where why how there here also than so such into onto over under after before about between
    through during while up down out off again further once all any both each few more most other some own same very
    can will just should would could may might must s t"""
_NEGATIONS = frozenset(_NEGATION_WORDS.split())
_PRONOUNS = frozenset(_PRONOUN_WORDS.split())
_QUESTION_WORDS = frozenset(_QUESTION_TEXT.split())
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
