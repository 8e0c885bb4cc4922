"""JSONL and CSV: one `record` block per row. A row's text is its `text` (or `content`, `body`) field
when it has one, else `key: value` lines; a `title` field becomes the record's first line."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from typing import Any

import orjson

from keel.rag.parse import Block, Parsed, ParseError, decode

MAX_ROWS = 1_000_000
_TEXT_FIELDS = ("text", "content", "body")


def jsonl(data: bytes) -> Parsed:
    blocks = []
    for n, line in enumerate(decode(data).split("\n"), 1):
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ParseError(f"line {n} is not JSON: {exc}") from None
        blocks.append(Block("record", _record(value)))
        if len(blocks) > MAX_ROWS:
            raise ParseError(f"more than {MAX_ROWS} rows")
    return Parsed(None, tuple(b for b in blocks if b.text))


def csv_rows(data: bytes) -> Parsed:
    text = decode(data)
    try:
        dialect = csv.Sniffer().sniff(text[:8192], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    reader = csv.DictReader(io.StringIO(text), dialect=dialect)
    blocks = []
    try:
        for row in reader:
            blocks.append(Block("record", _record({k: v for k, v in row.items() if k is not None})))
            if len(blocks) > MAX_ROWS:
                raise ParseError(f"more than {MAX_ROWS} rows")
    except csv.Error as exc:
        raise ParseError(f"line {reader.line_num}: {exc}") from None
    return Parsed(None, tuple(b for b in blocks if b.text))


def _record(value: Any) -> str:
    if not isinstance(value, Mapping):
        return value if isinstance(value, str) else orjson.dumps(value).decode()
    title = value.get("title")
    body = next((value[f] for f in _TEXT_FIELDS if isinstance(value.get(f), str) and value[f].strip()), None)
    if body is None:
        lines = [f"{k}: {_scalar(v)}" for k, v in value.items() if k != "title" and v not in (None, "")]
        body = "\n".join(lines)
    head = f"{title}\n" if isinstance(title, str) and title.strip() else ""
    return (head + body).strip()


def _scalar(v: Any) -> str:
    return v if isinstance(v, str) else orjson.dumps(v).decode()
