"""Documents of every kind RAG ingests, made here with the libraries (python-docx) or by hand (a minimal
PDF writer: one page of Helvetica text), and a folder mixing them, for the ingestion tests and bench."""

from __future__ import annotations

import io
from pathlib import Path


def pdf(lines: list[str], title: str | None = None) -> bytes:
    """A one-page PDF whose text layer holds `lines`."""

    def esc(s: str) -> str:
        return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    content = "BT /F1 11 Tf 72 740 Td 14 TL " + " ".join(f"({esc(line)}) '" for line in lines) + " ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        " /Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(content)} >>\nstream\n{content}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    if title:
        objects.append(f"<< /Title ({esc(title)}) >>")
    out = b"%PDF-1.4\n"
    offsets = []
    for i, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    info = f" /Info {len(objects)} 0 R" if title else ""
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R{info} >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def docx(title: str, sections: list[tuple[str, list[str]]]) -> bytes:
    import docx as python_docx

    document = python_docx.Document()
    document.add_heading(title, 0)
    for heading, paragraphs in sections:
        document.add_heading(heading, 1)
        for p in paragraphs:
            document.add_paragraph(p)
    table = document.add_table(rows=2, cols=2)
    for r, row in enumerate((("Setting", "Value"), ("retention", "seven days"))):
        for c, text in enumerate(row):
            table.cell(r, c).text = text
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def html(title: str, heading: str, paragraphs: list[str]) -> bytes:
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    return (
        f"<html><head><title>{title}</title><script>var tracking = 1;</script></head><body>"
        "<nav><a href='/'>Home</a> | <a href='/about'>About us</a> | <a href='/login'>Log in</a></nav>"
        f"<div id='content'><article><h1>{heading}</h1>{body}</article></div>"
        "<footer>Copyright 2026 Example Corp. All rights reserved. Cookie settings.</footer></body></html>"
    ).encode()


GOOD = {
    "notes.txt": "The ferry leaves the harbour at seven.\n\nTickets are sold at the kiosk near the pier.",
    "guide.md": "# Install guide\n\nKeel runs on Linux and macOS.\n\n## Linux\n\nUse the package manager to install"
    " Python 3.11 first. Then install Keel with pip.\n\n## macOS\n\nHomebrew provides Python; the rest is the same.",
}


def mixed_folder(root: Path) -> dict[str, str]:
    """txt, md, html, pdf, docx and a corrupt pdf under `root` (one in a subfolder); id → a phrase in it."""
    (root / "sub").mkdir(parents=True, exist_ok=True)
    (root / "notes.txt").write_text(GOOD["notes.txt"])
    (root / "guide.md").write_text(GOOD["guide.md"])
    (root / "page.html").write_bytes(
        html("Glacier page", "Glaciers", ["Glaciers carve valleys over thousands of years, slowly and surely.",
                                          "A glacier moves under its own weight, a few metres a day at most."])
    )  # fmt: skip
    (root / "sub" / "report.pdf").write_bytes(
        pdf(["Quarterly report on volcano monitoring.", "Seismic activity rose in the northern flank."], "Report")
    )
    (root / "memo.docx").write_bytes(
        docx("Memo on lighthouses", [("Keepers", ["The lighthouse keeper trims the lamp wick every evening."])])
    )
    (root / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nthis is not a pdf")
    return {
        "notes.txt": "ferry",
        "guide.md": "Homebrew",
        "page.html": "glacier",
        "sub/report.pdf": "volcano",
        "memo.docx": "lighthouse",
    }
