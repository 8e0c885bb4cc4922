"""Parsers and chunking, on files made here: each kind parses to its structure (headings, paragraphs,
items, rows, records), boilerplate left out of HTML; files that cannot be read fail with their reason;
chunks respect the token budget, keep their heading path, overlap within a section, never span two
sections, and drop exact and near duplicates."""

from __future__ import annotations

import itertools
import random

import pytest

from keel.rag.chunk import NEAR_BITS, ChunkingSpec, chunk, count_tokens, simhash
from keel.rag.parse import Block, Parsed, ParseError, kind_of, parse
from tests.e2e.rag_files import docx, html, pdf


def test_markdown_keeps_headings_items_and_code() -> None:
    got = parse(b"---\ntitle: x\n---\n# Guide\n\nIntro line\ncontinued.\n\n## Setup\n\n- one\n- two\n"
                b"  more\n\n```\npip install keel\n```\nSub\n---\n\ntext", "md")  # fmt: skip
    assert got.title == "Guide"
    assert [(b.kind, b.text, b.level) for b in got.blocks] == [
        ("heading", "Guide", 1), ("para", "Intro line continued.", 0), ("heading", "Setup", 2),
        ("item", "one", 0), ("item", "two more", 0), ("code", "pip install keel", 0), ("heading", "Sub", 2),
        ("para", "text", 0),
    ]  # fmt: skip


def test_html_keeps_the_article_and_drops_navigation_scripts_and_footer() -> None:
    got = parse(html("Page", "Main heading", ["First paragraph of the story, long enough to be the story.",
                                              "Second paragraph with more of the same story."]), "html")  # fmt: skip
    text = " ".join(b.text for b in got.blocks)
    assert got.title == "Page" and got.blocks[0] == Block("heading", "Main heading", 1)
    assert "First paragraph" in text and "Second paragraph" in text
    for boilerplate in ("Home", "About us", "Copyright", "tracking"):
        assert boilerplate not in text


def test_pdf_and_docx_made_by_their_libraries_parse_with_their_structure() -> None:
    got = parse(pdf(["Line one of the report.", "Line two."], title="Report"), "pdf")
    assert got.title == "Report" and "Line one of the report." in got.blocks[0].text
    word = parse(docx("Handbook", [("Leave", ["Annual leave is 25 days."])]), "docx")
    assert word.title == "Handbook"
    assert [(b.kind, b.text) for b in word.blocks] == [
        ("heading", "Handbook"), ("heading", "Leave"), ("para", "Annual leave is 25 days."),
        ("row", "Setting | Value"), ("row", "retention | seven days"),
    ]  # fmt: skip


def test_rows_are_records() -> None:
    lines = b'{"title": "A", "text": "alpha body"}\n{"q": "why", "n": 2}\n\n"bare"\n'
    assert [b.text for b in parse(lines, "jsonl").blocks] == ["A\nalpha body", "q: why\nn: 2", "bare"]
    assert [b.text for b in parse(b"name;city\nann;Oslo\nbo;Rome\n", "csv").blocks] == [
        "name: ann\ncity: Oslo", "name: bo\ncity: Rome"]  # fmt: skip


@pytest.mark.parametrize(
    ("data", "kind", "reason"),
    [
        (b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\ngarbage", "pdf", "damaged PDF"),
        (b"hello", "pdf", "not a PDF file"),
        (pdf([]), "pdf", "no text layer"),
        (b"PK\x03\x04 not really a zip", "docx", "not a readable docx file"),
        (b"plain", "docx", "not a DOCX file"),
        (b'{"a": 1}\n{broken\n', "jsonl", "line 2 is not JSON"),
        (b"   \n\n ", "txt", "no text found"),
        (b"", "html", "empty"),
    ],
)
def test_unreadable_files_fail_with_their_reason(data: bytes, kind: str, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        parse(data, kind)


def test_kinds_by_suffix_then_media_type() -> None:
    assert [kind_of(n) for n in ("a.MD", "b.htm", "c.ndjson", "d.exe", "noext")] == ["md", "html", "jsonl", None, None]
    assert kind_of("upload", "application/pdf") == "pdf" and kind_of("x.txt", "application/pdf") == "txt"


def _words(rng: random.Random, n: int) -> str:
    return " ".join(f"w{rng.randrange(100_000)}" for _ in range(n))


def test_chunks_fit_the_budget_keep_heading_paths_and_never_span_sections() -> None:
    rng = random.Random(7)
    sentences = lambda k: " ".join(_words(rng, 12) + "." for _ in range(k))  # noqa: E731
    doc = Parsed("T", (
        Block("heading", "Guide", 1), Block("para", sentences(3)),
        Block("heading", "Install", 2), Block("para", sentences(30)), Block("para", _words(rng, 300)),
        Block("heading", "Linux", 3), Block("para", sentences(2)),
        Block("heading", "Usage", 2), Block("item", sentences(1)), Block("record", sentences(1)),
    ))  # fmt: skip
    spec = ChunkingSpec(max_tokens=60, overlap=15)
    chunks = chunk(doc, spec)
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert c.tokens == count_tokens(c.text) <= spec.max_tokens - count_tokens(" > ".join(c.heading_path))
    paths = [c.heading_path for c in chunks]
    assert paths[0] == ("Guide",) and ("Guide", "Install", "Linux") in paths and paths[-1] == ("Guide", "Usage")
    assert paths.count(("Guide", "Usage")) == 2  # the record is a chunk of its own
    install = [c.text for c in chunks if c.heading_path == ("Guide", "Install")]
    assert len(install) > 3
    for a, b in itertools.pairwise(install):  # consecutive chunks of a section overlap
        assert a.split(". ")[-1].rstrip(".") in b or a.split()[-1] in b


def test_exact_and_near_duplicate_chunks_are_dropped() -> None:
    rng = random.Random(3)
    base = _words(rng, 80) + "."
    near = base.replace(base.split()[40], "changed", 1)
    other = _words(rng, 80) + "."
    doc = Parsed(None, tuple(Block("record", t) for t in (base, base.upper(), near, other)))
    assert [c.text for c in chunk(doc, ChunkingSpec(max_tokens=200))] == [base, other]
    assert bin(simhash(base) ^ simhash(near)).count("1") <= NEAR_BITS < bin(simhash(base) ^ simhash(other)).count("1")


def test_chunking_spec_is_checked_field_by_field() -> None:
    assert ChunkingSpec.from_json({"max_tokens": 100}) == ChunkingSpec(100, 25, "structure")
    for bad, field in (({"max_tokens": 8}, "max_tokens"), ({"overlap": -1}, "overlap"),
                       ({"strategy": "x"}, "strategy"), ({"size": 1}, "size")):  # fmt: skip
        with pytest.raises(ValueError, match=f"chunking.{field}"):
            ChunkingSpec.from_json(bad)
