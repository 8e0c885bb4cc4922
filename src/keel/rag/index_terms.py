"""BM25 in process over a build's chunk texts: an inverted index beside the build's vectors (index_vectors.py).

It is loaded and kept current with the vectors (the same rows, read once, in chunk id order), so a row of
the postings is a row of the vector matrix and one admitted-rows mask (the caller's access list, filters
and freshness, computed before any scoring) serves both searches: only admitted rows are scored, never
a top-k filtered after the fact. Scoring is numpy over the query terms' postings, no Python per matching
row: at 100,000 chunks a query costs about a millisecond where FTS5's bm25() over the ~15,000 matching
rows cost ~50 ms.

Tokens: `\\w+` runs, lower-cased, Snowball English stems (PyStemmer, the `rag` extra; without it, words as
they are), the stopwords of keel.store.protocols.rag_index.query_terms left out of queries. BM25 is Lucene's
(k1 1.2, b 0.75, idf ln(1 + (N - df + 0.5) / (df + 0.5)), never negative); N, df and the average length
count every loaded row, rows of replaced documents too until the matrix is read again (index_vectors).
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from keel.store.protocols.rag_index import Candidates

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

K1 = 0.9  # Anserini's defaults for passages (Lucene's 1.2 / 0.75 are for whole documents)
B = 0.4
_WORD = re.compile(r"[^\W_]+")
_MERGE_AT = 8  # blocks of one term's postings merged into one array on read


def _stemmer() -> Callable[[list[str]], list[str]]:
    try:
        import Stemmer  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # the rag extra is not installed: words are matched as they are
        return lambda words: words
    stem: Callable[[list[str]], list[str]] = Stemmer.Stemmer("english").stemWords
    return stem


class Tokens:
    """Text to term numbers: words to stems to numbers, cached (vocabularies are small beside the text)."""

    def __init__(self) -> None:
        self._stem = _stemmer()
        self._known: dict[str, int] = {}  # word -> term number
        self._terms: dict[str, int] = {}  # stem -> term number
        self._lock = threading.Lock()

    def __call__(self, text: str) -> list[int]:
        terms: list[int] = self.many([text])[0].tolist()
        return terms

    def many(self, texts: Sequence[str]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """The term numbers of all the texts one after the other, and how many each text has."""
        import numpy as np

        words = [_WORD.findall(t.lower()) for t in texts]
        flat = list(itertools.chain.from_iterable(words))
        known = self._known
        new = [w for w in dict.fromkeys(flat) if w not in known]  # numbered in order of appearance
        if new:
            with self._lock:  # a build's first read runs in a thread: one numbering for all
                if len(known) > 1_000_000:  # a cache, not a vocabulary: the stems keep their numbers
                    known.clear()
                for word, stem in zip(new, self._stem(new), strict=True):
                    known[word] = self._terms.setdefault(stem, len(self._terms)) if len(word) < 64 else -1
        terms = np.fromiter(map(known.__getitem__, flat), dtype=np.int64, count=len(flat))
        rows = np.repeat(np.arange(len(texts)), [len(w) for w in words])
        kept = terms >= 0  # words of 64 characters or more are no terms
        return terms[kept], np.bincount(rows[kept], minlength=len(texts)).astype(np.int64)

    def stems(self) -> list[str]:
        """The stems in term-number order: what another process needs to number words as this one did."""
        with self._lock:
            return list(self._terms)  # numbered in order of insertion

    @classmethod
    def numbered(cls, stems: Sequence[str]) -> Tokens:
        """Tokens numbering stems as the process that listed them did (`stems`); new ones come after."""
        tokens = cls()
        tokens._terms = dict(zip(stems, range(len(stems)), strict=True))
        return tokens


@dataclass(frozen=True, slots=True)
class Postings:
    """Every term's postings in one set of arrays, by term number: term t's rows (ascending) and term
    frequencies are `rows[offsets[t]:offsets[t + 1]]` and `tf[…]`. A whole build in a few arrays."""

    offsets: npt.NDArray[np.int64]
    rows: npt.NDArray[np.int32]
    tf: npt.NDArray[np.float32]


class BuildTerms:
    """Postings per term: blocks of (row, term frequency) arrays, appended as rows load."""

    def __init__(self, tokens: Tokens) -> None:
        import numpy as np

        self._tokens = tokens
        self.n = 0
        self.total = 0  # tokens over every row
        self.lengths: npt.NDArray[np.float32] = np.zeros(0, dtype=np.float32)
        self._postings: dict[int, list[tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]]] = {}
        self._df: dict[int, int] = {}
        self._base: Postings | None = None  # a build handed over whole: sliced into _postings on first use
        # blocks as loaded: (first row, offsets of each row's terms, the terms one row after the other)
        self._forward: list[tuple[int, npt.NDArray[np.int64], npt.NDArray[np.int32]]] = []

    def extend(self, texts: Sequence[str]) -> None:
        """Index the next rows (row numbers n, n+1, ... in the order given): numpy groups the block's
        (term, row) pairs, Python only maps words to term numbers."""
        import numpy as np

        if not texts:
            return
        terms, lengths = self._tokens.many(texts)
        rows = np.repeat(np.arange(len(texts), dtype=np.int64), lengths)
        pairs, tf = np.unique(terms * len(texts) + rows, return_counts=True)  # sorted by term, then row
        term_of, row_of = np.divmod(pairs, len(texts))
        starts = np.flatnonzero(np.r_[True, term_of[1:] != term_of[:-1]])
        ends = np.r_[starts[1:], len(pairs)]
        row_of = (row_of + self.n).astype(np.int32)
        tf32 = tf.astype(np.float32)
        for term, a, b in zip(term_of[starts].tolist(), starts.tolist(), ends.tolist(), strict=True):
            (self._seed(term) or self._postings.setdefault(term, [])).append((row_of[a:b], tf32[a:b]))
            self._df[term] = self._df.get(term, 0) + b - a
        self.lengths = np.concatenate([self.lengths, lengths.astype(np.float32)])
        self._forward.append((self.n, np.r_[0, np.cumsum(lengths)], terms.astype(np.int32)))
        self.total += int(lengths.sum())
        self.n += len(texts)

    @property
    def tokens(self) -> Tokens:
        return self._tokens

    @classmethod
    def handed(
        cls, tokens: Tokens, postings: Postings, lengths: npt.NDArray[np.float32], terms: npt.NDArray[np.int32]
    ) -> BuildTerms:
        """A build's full text from arrays made elsewhere (`export`), numbered by `tokens`: no Python per
        row or per term here; a term's postings are sliced out when a search or a write first needs them."""
        import numpy as np

        made = cls(tokens)
        made.n, made.total, made.lengths = len(lengths), int(lengths.sum()), lengths
        made._base = postings
        made._forward = [(0, np.r_[0, np.cumsum(lengths.astype(np.int64))], terms)]
        return made

    def export(self) -> tuple[Postings, npt.NDArray[np.float32], npt.NDArray[np.int32]]:
        """The postings, row lengths and forward index as arrays, for `handed` in another process."""
        import numpy as np

        count = len(self._tokens.stems())
        offsets = np.zeros(count + 1, dtype=np.int64)
        rows, tfs = [], []
        for term in range(count):
            found = self._of(term)
            if found is not None:
                rows.append(found[0])
                tfs.append(found[1])
            offsets[term + 1] = offsets[term] + (0 if found is None else len(found[0]))
        postings = Postings(
            offsets,
            np.concatenate(rows) if rows else np.zeros(0, np.int32),
            np.concatenate(tfs) if tfs else np.zeros(0, np.float32),
        )
        forward = np.concatenate([b[2] for b in self._forward]) if self._forward else np.zeros(0, np.int32)
        return postings, self.lengths, forward.astype(np.int32, copy=False)

    def _seed(self, term: int) -> list[tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]] | None:
        """The term's posting blocks, sliced from a handed-over build's arrays on first use."""
        blocks = self._postings.get(term)
        base = self._base
        if blocks is None and base is not None and 0 <= term < len(base.offsets) - 1:
            a, b = int(base.offsets[term]), int(base.offsets[term + 1])
            if b > a:
                blocks = self._postings[term] = [(base.rows[a:b], base.tf[a:b])]
                self._df[term] = b - a
        return blocks

    def row_terms(self, row: int) -> npt.NDArray[np.int32]:
        """A row's terms in text order (the forward index: feedback reads the top chunks' words here)."""
        first, offsets, terms = self._forward[bisect.bisect_right(self._forward, row, key=lambda b: b[0]) - 1]
        return terms[offsets[row - first] : offsets[row - first + 1]]

    def _of(self, term: int) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]] | None:
        import numpy as np

        blocks = self._seed(term)
        if not blocks:
            return None
        if len(blocks) > _MERGE_AT:  # many small writes since: one array again
            blocks[:] = [(np.concatenate([b[0] for b in blocks]), np.concatenate([b[1] for b in blocks]))]
        if len(blocks) == 1:
            return blocks[0]
        return np.concatenate([b[0] for b in blocks]), np.concatenate([b[1] for b in blocks])

    def terms(self, words: Sequence[str]) -> list[int]:
        """The query words' term numbers, each once."""
        return list(dict.fromkeys(self._tokens(" ".join(words))))

    def scores(
        self, terms: Sequence[int] | Mapping[int, float], admitted: npt.NDArray[np.bool_]
    ) -> npt.NDArray[np.float64] | None:
        """BM25 of every admitted row for the terms, each weighted (1 when a sequence): 0 where a row holds
        none; None when no row does."""
        import numpy as np

        n = min(self.n, len(admitted))
        if n == 0 or not terms:
            return None
        weighted = terms if isinstance(terms, Mapping) else dict.fromkeys(terms, 1.0)
        average = self.total / self.n or 1.0
        rows_of, weights = [], []
        for term, weight in weighted.items():
            found = self._of(term)
            if found is None:
                continue
            rows, tf = found
            keep = rows < n
            keep[keep] = admitted[rows[keep]]
            rows, tf = rows[keep], tf[keep]
            if not rows.size:
                continue
            df = self._df[term]
            norm = K1 * (1 - B + B * self.lengths[rows] / average)
            rows_of.append(rows)
            weights.append(weight * self._idf(df) * tf * (K1 + 1) / (tf + norm))
        if not rows_of:
            return None
        summed = np.bincount(np.concatenate(rows_of), weights=np.concatenate(weights), minlength=n)
        return summed.astype(np.float64, copy=False)

    def scores_at(self, terms: Mapping[int, float], rows: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """BM25 of the given rows (ascending) for weighted terms: a binary search of each row in the terms'
        postings (rows ascend within them), for a pool of a few hundred rows out of many thousands."""
        import numpy as np

        out = np.zeros(len(rows), dtype=np.float64)
        if not len(rows) or self.n == 0:
            return out
        average = self.total / self.n or 1.0
        for term, weight in terms.items():
            found = self._of(term)
            if found is None:
                continue
            posted, tf = found
            at = np.minimum(np.searchsorted(posted, rows), len(posted) - 1)
            hit = posted[at] == rows
            if not hit.any():
                continue
            f = tf[at[hit]]
            norm = K1 * (1 - B + B * self.lengths[rows[hit]] / average)
            out[hit] += weight * self._idf(self._df[term]) * f * (K1 + 1) / (f + norm)
        return out

    def _idf(self, df: int) -> float:
        return math.log(1 + (self.n - df + 0.5) / (df + 0.5))

    def feedback(self, rows: Sequence[int], query: Sequence[int], count: int) -> dict[int, float]:
        """Expansion terms from the top chunks (RM3's relevance model, idf-weighted so that common words do
        not lead): each term's mean share of a chunk's tokens times its idf, the best `count` terms that
        are not in the query, weighted relative to the best (1.0)."""
        asked, weight = set(query), dict[int, float]()
        for row in rows:
            terms = self.row_terms(row).tolist()
            for term, tf in Counter(terms).items():
                df = self._df.get(term, 0) if self._seed(term) else 0
                if term not in asked and df > 1:  # a word of one chunk says nothing about the others
                    weight[term] = weight.get(term, 0.0) + tf / len(terms) * self._idf(df)
        best = sorted(weight.items(), key=lambda tw: (-tw[1], tw[0]))[:count]
        return {term: w / best[0][1] for term, w in best} if best else {}

    def top(
        self, words: Sequence[str], admitted: npt.NDArray[np.bool_], ids: npt.NDArray[np.int64], k: int
    ) -> Candidates:
        """The k admitted rows of best BM25 for the query words (each row holding one of them), best first,
        ties by chunk id; `admitted` is a mask over the rows, `ids` their chunk ids."""
        import numpy as np

        scores = self.scores(self.terms(words), admitted) if k > 0 else None
        if scores is None:
            return Candidates([], [])
        matched = np.flatnonzero(scores)
        best = np.argpartition(-scores[matched], k - 1)[:k] if matched.size > k else np.arange(matched.size)
        top = matched[best]
        top = top[np.lexsort((ids[top], -scores[top]))]
        return Candidates(ids[top].tolist(), scores[top].astype(float).tolist())
