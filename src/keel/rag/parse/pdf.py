"""PDF: the text layer of every page (pypdf), split into paragraphs. An encrypted file, a damaged one or
one without any text layer (a scan) fails with that reason."""

from __future__ import annotations

import io
import re

from keel.rag.parse import Block, Parsed, ParseError

MAX_PAGES = 5000


def parse(data: bytes) -> Parsed:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    if not data.lstrip()[:5].startswith(b"%PDF"):
        raise ParseError("not a PDF file (no %PDF header)")
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            raise ParseError("the PDF is encrypted: decrypt it before ingesting")
        pages = reader.pages
        if len(pages) > MAX_PAGES:
            raise ParseError(f"the PDF has {len(pages)} pages, more than {MAX_PAGES}")
        texts = [page.extract_text() or "" for page in pages]
        meta = reader.metadata
        title = str(meta.title).strip() if meta is not None and meta.title else None
    except PdfReadError as exc:
        raise ParseError(f"damaged PDF: {str(exc)[:300]}") from exc
    blocks = [Block("para", p) for text in texts for p in _paragraphs(text)]
    if not blocks:
        raise ParseError("the PDF has no text layer (a scan?): run OCR before ingesting")
    return Parsed(title or None, tuple(blocks))


def _paragraphs(text: str) -> list[str]:
    text = re.sub(r"-\n(?=[a-z])", "", text)  # a word hyphenated across lines
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]
