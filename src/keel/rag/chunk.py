"""Structure-aware chunking: `Parsed` blocks → chunks of at most `max_tokens`, with overlap, deduplicated.

Strategies (`ChunkingSpec.strategy`):
- `structure` (default): a chunk never spans two sections (a heading starts a new one); blocks of a
  section pack whole into a chunk while they fit; a block too big for one is cut at sentence ends, and a
  sentence too big at word boundaries. A chunk that continues a section starts with the last sentences of
  the previous one, up to `overlap` tokens. A record (a JSONL/CSV row) is a chunk of its own.
- `sentences`: the same cuts, ignoring headings (one stream of sentences).

A chunk keeps its heading path (`("Guide", "Install", "Linux")`) beside its text: the index embeds the
document title and the path before the text (keel.rag.index.embed_text), so the budget for the text is
`max_tokens` less the path's tokens, and the text itself stays what the document says (citations).
Tokens are counted as words and punctuation marks (`\\w+|[^\\w\\s]`), close to what a WordPiece
tokenizer makes of prose (a little under it for rare words: keep `max_tokens` below the model's window).

Duplicates are dropped within a document: exact ones by the hash of their normalised body, near ones by
a 64-bit SimHash of word 3-shingles within 8 bits (found through nine bands of 7-8 bits: by pigeonhole a
pair within 8 bits agrees on a whole band). Measured on 80-word texts: one word changed lands within 8
bits four times in five; unrelated texts were never closer than 20.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from keel.rag.index import ChunkIn
from keel.rag.parse import Block, Parsed

Strategy = Literal["structure", "sentences"]
STRATEGIES: tuple[str, ...] = ("structure", "sentences")
_TOKEN = re.compile(r"\w+|[^\w\s]")
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])[\"'”’)\]]*\s+(?=\S)|\n+")
DEFAULT_MAX_TOKENS = 200  # under MiniLM's 256-token window with the title and heading path before it
DEFAULT_OVERLAP = 30
NEAR_BITS = 8  # SimHash distance at or under which two chunks are near-duplicates
_BANDS = tuple((64 * i // (NEAR_BITS + 1), 64 * (i + 1) // (NEAR_BITS + 1)) for i in range(NEAR_BITS + 1))
_MASK64 = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class ChunkingSpec:
    max_tokens: int = DEFAULT_MAX_TOKENS
    overlap: int = DEFAULT_OVERLAP
    strategy: Strategy = "structure"

    def json(self) -> dict[str, Any]:
        return {"max_tokens": self.max_tokens, "overlap": self.overlap, "strategy": self.strategy}

    @classmethod
    def from_json(cls, value: Any) -> ChunkingSpec:
        """Checked: ValueError naming the field (`chunking.max_tokens`, …) and what it takes."""
        if value is None:
            return cls()
        if not isinstance(value, Mapping):
            raise ValueError("chunking: must be an object {max_tokens, overlap, strategy}")
        unknown = set(value) - {"max_tokens", "overlap", "strategy"}
        if unknown:
            raise ValueError(f"chunking.{sorted(unknown)[0]}: unknown key; use max_tokens, overlap, strategy")
        max_tokens = value.get("max_tokens", DEFAULT_MAX_TOKENS)
        if type(max_tokens) is not int or not 16 <= max_tokens <= 8192:
            raise ValueError("chunking.max_tokens: an integer from 16 to 8192")
        overlap = value.get("overlap", min(DEFAULT_OVERLAP, max_tokens // 4))
        if type(overlap) is not int or not 0 <= overlap <= max_tokens // 2:
            raise ValueError(f"chunking.overlap: an integer from 0 to max_tokens / 2 ({max_tokens // 2})")
        strategy = value.get("strategy", "structure")
        if strategy not in STRATEGIES:
            raise ValueError(f"chunking.strategy: one of {', '.join(STRATEGIES)}")
        return cls(max_tokens, overlap, strategy)


def count_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))


def chunk(parsed: Parsed, spec: ChunkingSpec) -> list[ChunkIn]:
    """The document's chunks, in order, ordinals 0…n-1, duplicates dropped."""
    pieces: list[tuple[tuple[str, ...], str]] = []
    for path, blocks in _sections(parsed, spec.strategy):
        head = " > ".join(path)
        budget = max(8, spec.max_tokens - (count_tokens(head) if head else 0))
        for body in _pack(blocks, budget, min(spec.overlap, budget // 2)):
            pieces.append((path, body))
    return _dedup(pieces)


def _sections(parsed: Parsed, strategy: str) -> Iterator[tuple[tuple[str, ...], list[Block]]]:
    """(heading path, the section's blocks) in order; a record is a section of its own."""
    path: list[tuple[int, str]] = []
    blocks: list[Block] = []
    for b in parsed.blocks:
        if b.kind == "heading" and strategy == "structure":
            if blocks:
                yield tuple(t for _, t in path), blocks
                blocks = []
            path = [(lv, t) for lv, t in path if lv < b.level] + [(b.level, b.text)]
        elif b.kind == "record":
            if blocks:
                yield tuple(t for _, t in path), blocks
                blocks = []
            yield tuple(t for _, t in path), [b]
        elif b.kind == "heading":  # `sentences`: a heading is a line of text
            blocks.append(Block("para", b.text))
        else:
            blocks.append(b)
    if blocks:
        yield tuple(t for _, t in path), blocks


def _pack(blocks: Sequence[Block], budget: int, overlap: int) -> Iterator[str]:
    """Chunk bodies of a section: whole blocks while they fit, else sentences, else words."""
    units: list[tuple[str, int, bool]] = []  # (text, tokens, starts a block)
    for b in blocks:
        n = count_tokens(b.text)
        if n <= budget:
            units.append((b.text, n, True))
            continue
        for i, piece in enumerate(_split(b.text, budget - overlap)):  # room left for the overlap
            units.append((piece, count_tokens(piece), i == 0))
    current: list[tuple[str, int, bool]] = []
    size = 0
    fresh = 0  # units in `current` not carried over from the previous chunk
    for unit in units:
        if current and size + unit[1] > budget:
            yield _join(current)
            current = _tail(current, overlap, budget - unit[1])
            size = sum(n for _, n, _ in current)
            fresh = 0
        current.append(unit)
        size += unit[1]
        fresh += 1
    if current and fresh:
        yield _join(current)


def _split(text: str, budget: int) -> Iterator[str]:
    """Sentences of `text`; a sentence over `budget` tokens cut into runs of words that fit."""
    for sentence in _SENTENCE_END.split(text):
        sentence = sentence.strip()
        if not sentence:
            continue
        if count_tokens(sentence) <= budget:
            yield sentence
            continue
        run: list[str] = []
        size = 0
        for word in sentence.split():
            n = count_tokens(word)
            if run and size + n > budget:
                yield " ".join(run)
                run, size = [], 0
            run.append(word)
            size += n
        if run:
            yield " ".join(run)


def _tail(units: list[tuple[str, int, bool]], overlap: int, room: int) -> list[tuple[str, int, bool]]:
    """The end of a chunk to start the next one with: its last whole units up to `overlap` tokens (and
    the room the next unit leaves), else the last words of its last unit."""
    limit = min(overlap, room)
    kept: list[tuple[str, int, bool]] = []
    size = 0
    for text, n, starts in reversed(units):
        if size + n > limit:
            break
        kept.insert(0, (text, n, starts))
        size += n
    if kept or limit <= 0 or not units:
        return kept
    words: list[str] = []
    for word in reversed(units[-1][0].split()):
        n = count_tokens(word)
        if size + n > limit:
            break
        words.insert(0, word)
        size += n
    return [(" ".join(words), size, True)] if words else []


def _join(units: Sequence[tuple[str, int, bool]]) -> str:
    out = ""
    for text, _, starts in units:
        out = text if not out else out + ("\n\n" if starts else " ") + text
    return out


def _normal(text: str) -> str:
    return " ".join(text.lower().split())


def simhash(text: str) -> int:
    """64-bit SimHash of the word 3-shingles of `text` (of its words when it has fewer than three)."""
    words = _normal(text).split()
    grams = [" ".join(words[i : i + 3]) for i in range(max(1, len(words) - 2))]
    weights = [0] * 64
    for g in grams:
        h = int.from_bytes(hashlib.blake2b(g.encode(), digest_size=8).digest(), "big")
        for bit in range(64):
            weights[bit] += 1 if h >> bit & 1 else -1
    return sum(1 << bit for bit in range(64) if weights[bit] > 0) & _MASK64


def _dedup(pieces: Sequence[tuple[tuple[str, ...], str]]) -> list[ChunkIn]:
    seen: set[str] = set()
    bands: list[dict[int, list[int]]] = [{} for _ in _BANDS]
    kept: list[ChunkIn] = []
    for path, body in pieces:
        digest = hashlib.sha256(_normal(body).encode()).hexdigest()
        if digest in seen:
            continue
        sig = simhash(body)
        keys = [(sig >> lo) & ((1 << (hi - lo)) - 1) for lo, hi in _BANDS]
        near = {j for i, k in enumerate(keys) for j in bands[i].get(k, ())}
        if any(bin(sig ^ other).count("1") <= NEAR_BITS for other in near):
            continue
        seen.add(digest)
        for i, k in enumerate(keys):
            bands[i].setdefault(k, []).append(sig)
        kept.append(ChunkIn(len(kept), body, path, digest, count_tokens(body)))
    return kept
