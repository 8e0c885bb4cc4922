"""Plain text and Markdown: paragraphs by blank lines; Markdown's ATX and setext headings, list items
and fenced code blocks kept as such (front matter dropped)."""

from __future__ import annotations

import re

from keel.rag.parse import Block, Parsed, decode

_ATX = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_SETEXT = re.compile(r"^(=+|-+)\s*$")
_ITEM = re.compile(r"^\s*(?:[-*+]|\d{1,9}[.)])\s+(.*)$")
_FENCE = re.compile(r"^\s*(```|~~~)")


def paragraphs(text: str) -> list[str]:
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]


def plain(data: bytes) -> Parsed:
    return Parsed(None, tuple(Block("para", p) for p in paragraphs(decode(data))))


def markdown(data: bytes) -> Parsed:
    lines = _drop_front_matter(decode(data).split("\n"))
    blocks: list[Block] = []
    para: list[str] = []
    code: list[str] | None = None
    for line in lines:
        if code is not None:
            if _FENCE.match(line):
                blocks.append(Block("code", "\n".join(code).strip("\n")))
                code = None
            else:
                code.append(line)
        elif _FENCE.match(line):
            _flush(blocks, para)
            code = []
        else:
            _line(line, blocks, para)
    _flush(blocks, para)
    if code:
        blocks.append(Block("code", "\n".join(code)))
    title = next((b.text for b in blocks if b.kind == "heading" and b.level == 1), None)
    return Parsed(title, tuple(b for b in blocks if b.text.strip()))


def _flush(blocks: list[Block], para: list[str]) -> None:
    if para:
        blocks.append(Block("para", " ".join(" ".join(para).split())))
        para.clear()


def _line(line: str, blocks: list[Block], para: list[str]) -> None:
    """One line outside code fences: a heading, a setext underline, a list item, a break, or text."""
    if (m := _ATX.match(line)) is not None:
        _flush(blocks, para)
        blocks.append(Block("heading", m.group(2), len(m.group(1))))
    elif _SETEXT.match(line) and len(para) == 1:
        title = para.pop()
        blocks.append(Block("heading", title.strip(), 1 if line.lstrip().startswith("=") else 2))
    elif (m := _ITEM.match(line)) is not None:
        _flush(blocks, para)
        blocks.append(Block("item", m.group(1).strip()))
    elif not line.strip():
        _flush(blocks, para)
    elif blocks and blocks[-1].kind == "item" and not para and line.startswith((" ", "\t")):
        last = blocks.pop()  # a list item's continuation line
        blocks.append(Block("item", f"{last.text} {line.strip()}"))
    else:
        para.append(line.strip())


def _drop_front_matter(lines: list[str]) -> list[str]:
    if lines and lines[0].strip() == "---":
        for i in range(1, min(len(lines), 200)):
            if lines[i].strip() in ("---", "..."):
                return lines[i + 1 :]
    return lines
