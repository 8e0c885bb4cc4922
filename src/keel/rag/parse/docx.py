"""DOCX (python-docx): paragraphs in body order, `Heading N` and `Title` styles as headings, list styles
as items, tables as rows of cells joined by ' | '."""

from __future__ import annotations

import io
import re
from typing import Any

from keel.rag.parse import Block, Parsed, ParseError

_HEADING = re.compile(r"^heading\s*(\d)$", re.IGNORECASE)


def parse(data: bytes) -> Parsed:
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    if not data.startswith(b"PK"):
        raise ParseError("not a DOCX file (not a zip archive)")
    document = docx.Document(io.BytesIO(data))
    blocks: list[Block] = []
    for item in document.iter_inner_content():
        if isinstance(item, Paragraph):
            block = _paragraph(item)
            if block is not None:
                blocks.append(block)
        elif isinstance(item, Table):
            for row in item.rows:
                cells = _unique(" ".join(c.text.split()) for c in row.cells)
                if cells:
                    blocks.append(Block("row", " | ".join(cells)))
    title = (document.core_properties.title or "").strip() or None
    if title is None:
        title = next((b.text for b in blocks if b.kind == "heading" and b.level == 1), None)
    return Parsed(title, tuple(blocks))


def _paragraph(p: Any) -> Block | None:
    text = " ".join(p.text.split())
    if not text:
        return None
    style = (p.style.name if p.style is not None else "") or ""
    if style.lower() == "title":
        return Block("heading", text, 1)
    if (m := _HEADING.match(style)) is not None:
        return Block("heading", text, max(1, min(6, int(m.group(1)))))
    if "list" in style.lower():
        return Block("item", text)
    return Block("para", text)


def _unique(cells: Any) -> list[str]:
    """Merged cells repeat their text in each grid cell: keep one."""
    out: list[str] = []
    for c in cells:
        if c and (not out or out[-1] != c):
            out.append(c)
    return out
