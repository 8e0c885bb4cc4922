"""HTML: the main text only (readability-lxml drops navigation, sidebars, footers, scripts), walked into
headings, paragraphs, list items, code and table rows. A page whose main text readability cannot find
falls back to the whole body, with the same boilerplate tags removed."""

from __future__ import annotations

from typing import Any

from keel.rag.parse import Block, BlockKind, Parsed, ParseError, decode

_HEADINGS = {f"h{i}": i for i in range(1, 7)}
_LEAVES: dict[str, BlockKind] = {"p": "para", "li": "item", "pre": "code", "blockquote": "para", "dd": "para",
                                 "dt": "para", "figcaption": "para", "caption": "para"}  # fmt: skip
_DROP = ("script", "style", "nav", "header", "footer", "aside", "form", "noscript", "template", "svg")


def parse(data: bytes) -> Parsed:
    import lxml.html
    from readability import Document

    text = decode(data)
    if not text.strip():
        raise ParseError("the HTML file is empty")
    doc = Document(text)
    title = (doc.short_title() or "").strip() or None
    try:
        main = lxml.html.fromstring(doc.summary(html_partial=True))
        blocks = _walk(main)
    except Exception:  # readability found nothing it calls an article: use the body
        blocks = []
    if sum(len(b.text) for b in blocks if b.kind != "heading") < 40:
        root = lxml.html.fromstring(text)
        for bad in root.xpath("|".join(f"//{t}" for t in _DROP)):
            bad.drop_tree()
        blocks = _walk(root)
    original = lxml.html.fromstring(text)
    headings = [(el.tag, _text(el)) for el in original.iter(*_HEADINGS)]
    return Parsed(title, tuple(_restore_headings(blocks, headings)))


def _text(el: Any) -> str:
    return " ".join(el.text_content().split())


def _walk(root: Any) -> list[Block]:
    blocks: list[Block] = []
    for el in root.iter():
        tag = el.tag if isinstance(el.tag, str) else ""
        if tag in _HEADINGS:
            blocks.append(Block("heading", _text(el), _HEADINGS[tag]))
        elif tag in _LEAVES and not _inside_leaf(el):
            text = el.text_content().strip("\n") if tag == "pre" else _text(el)
            blocks.append(Block(_LEAVES[tag], text))
        elif tag == "tr" and not _inside_leaf(el):
            cells = [_text(c) for c in el if isinstance(c.tag, str) and c.tag in ("td", "th")]
            blocks.append(Block("row", " | ".join(c for c in cells if c)))
        elif tag == "div" and el.text and el.text.strip() and len(el) == 0:
            blocks.append(Block("para", " ".join(el.text.split())))
    return [b for b in blocks if b.text]


def _inside_leaf(el: Any) -> bool:
    parent = el.getparent()
    while parent is not None:
        if parent.tag in _LEAVES or parent.tag == "tr":
            return True
        parent = parent.getparent()
    return False


def _restore_headings(blocks: list[Block], headings: list[tuple[str, str]]) -> list[Block]:
    """readability demotes or drops headings it keeps as text: a paragraph equal to a heading of the
    page becomes that heading again."""
    levels = {text: _HEADINGS[tag] for tag, text in headings if text}
    return [Block("heading", b.text, levels[b.text]) if b.kind == "para" and b.text in levels else b for b in blocks]
