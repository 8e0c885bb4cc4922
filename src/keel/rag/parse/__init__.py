"""Parsers: a document's bytes → `Parsed` (a title and structured blocks), one module per family.

Every parser returns the same shape, so chunking never knows the format: headings (with their level),
paragraphs, list items, code, table rows and records (one JSONL/CSV row each). A file that cannot be
read raises `ParseError` with a reason a person can act on; a parser never returns half a document.
Heavy libraries (pypdf, python-docx, lxml/readability) load only when a file of their kind comes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

BlockKind = Literal["heading", "para", "item", "code", "row", "record"]
KINDS = ("txt", "md", "html", "pdf", "docx", "jsonl", "csv")
_BY_SUFFIX = {
    "txt": "txt", "text": "txt", "log": "txt", "rst": "txt",
    "md": "md", "markdown": "md", "mdx": "md",
    "html": "html", "htm": "html", "xhtml": "html",
    "pdf": "pdf", "docx": "docx", "jsonl": "jsonl", "ndjson": "jsonl", "csv": "csv",
}  # fmt: skip
_BY_MEDIA = {
    "text/plain": "txt",
    "text/markdown": "md",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/jsonl": "jsonl",
    "application/x-ndjson": "jsonl",
    "text/csv": "csv",
}


class ParseError(Exception):
    """The file cannot be read as its kind; the message says why (shown as the document's failure)."""


@dataclass(frozen=True, slots=True)
class Block:
    kind: BlockKind
    text: str
    level: int = 0  # headings: 1 (top) to 6


@dataclass(frozen=True, slots=True)
class Parsed:
    title: str | None
    blocks: tuple[Block, ...]

    def json(self) -> dict[str, Any]:
        return {"title": self.title, "blocks": [[b.kind, b.text, b.level] for b in self.blocks]}

    @classmethod
    def from_json(cls, data: Any) -> Parsed:
        return cls(data.get("title"), tuple(Block(k, t, int(lv)) for k, t, lv in data.get("blocks") or ()))


def kind_of(filename: str | None, media_type: str | None = None) -> str | None:
    """The parser kind of a file by its name's suffix, else its media type; None when neither is known."""
    if filename and "." in filename:
        found = _BY_SUFFIX.get(filename.rsplit(".", 1)[1].lower())
        if found:
            return found
    if media_type:
        return _BY_MEDIA.get(media_type.split(";", 1)[0].strip().lower())
    return None


def parse(data: bytes, kind: str) -> Parsed:
    """Parse `data` as `kind` (one of KINDS). Raises ParseError; never returns an empty document."""
    parser = _parser(kind)
    try:
        parsed = parser(data)
    except ParseError:
        raise
    except Exception as exc:  # a library's own failure on a malformed file is this file's fault
        raise ParseError(f"not a readable {kind} file ({type(exc).__name__}: {str(exc)[:300]})") from exc
    if not any(b.text.strip() for b in parsed.blocks):
        raise ParseError(f"no text found in the {kind} file")
    return parsed


def _parser(kind: str) -> Callable[[bytes], Parsed]:
    if kind in ("txt", "md"):
        from keel.rag.parse import text

        return text.plain if kind == "txt" else text.markdown
    if kind == "html":
        from keel.rag.parse import html

        return html.parse
    if kind == "pdf":
        from keel.rag.parse import pdf

        return pdf.parse
    if kind == "docx":
        from keel.rag.parse import docx

        return docx.parse
    if kind in ("jsonl", "csv"):
        from keel.rag.parse import rows

        return rows.jsonl if kind == "jsonl" else rows.csv_rows
    raise ParseError(f"unknown document kind {kind!r}: use one of {', '.join(KINDS)}")


def decode(data: bytes) -> str:
    """Text of a file: UTF-8 (a BOM dropped), else Latin-1, which never fails; NUL removed."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")
