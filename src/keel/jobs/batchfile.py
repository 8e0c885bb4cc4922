"""Batch input files: JSONL, one request per line, checked whole at upload.

A line is `{"custom_id": str, "method": "POST", "url": "/v1/chat/completions" | "/v1/embeddings",
"body": {...}}`; custom_ids are unique within the file. `parse_lines` refuses the first line that is
not (InvalidRequest naming the line), so a file that uploads is one the batch runner can read. Whether
a line's body is a valid request for its endpoint is not checked here: that line's answer is an
error in the batch's error file, under its custom_id, like any other failed line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from keel.errors import InvalidRequest

ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings")
MAX_CUSTOM_ID = 512


def blob_key(tenant: str, file_id: str) -> str:
    """Where a file's bytes live in the blob store (the tenant hex-encoded: any name is a safe key)."""
    return f"files/{tenant.encode().hex()}/{file_id}"


@dataclass(frozen=True, slots=True)
class BatchLine:
    line: int  # 1-based, blank lines counted
    custom_id: str
    url: str
    body: Any


def parse_lines(data: bytes, max_lines: int) -> list[BatchLine]:
    """Every request of a JSONL file, or InvalidRequest naming the first bad line."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    out: list[BatchLine] = []
    seen: dict[str, int] = {}
    for n, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        if len(out) >= max_lines:
            raise InvalidRequest(f"The file holds more than {max_lines} requests (batches.max_lines).", "file")
        line = _line(n, raw)
        if line.custom_id in seen:
            raise InvalidRequest(
                f"Line {n}: custom_id '{line.custom_id}' is used on line {seen[line.custom_id]} already; "
                "custom_ids must be unique within a file.",
                "file",
            )
        seen[line.custom_id] = n
        out.append(line)
    if not out:
        raise InvalidRequest("The file holds no requests: give one JSON object per line.", "file")
    return out


def _line(n: int, raw: bytes) -> BatchLine:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest(f"Line {n} is not valid JSON.", "file") from None
    if not isinstance(value, dict):
        raise InvalidRequest(f"Line {n} must be a JSON object with custom_id, method, url and body.", "file")
    custom_id = value.get("custom_id")
    if not isinstance(custom_id, str) or not 0 < len(custom_id) <= MAX_CUSTOM_ID or "\x00" in custom_id:
        raise InvalidRequest(
            f"Line {n}: 'custom_id' must be a non-empty string of at most {MAX_CUSTOM_ID} characters, without NUL.",
            "file",
        )
    if value.get("method") != "POST":
        raise InvalidRequest(f"Line {n}: 'method' must be \"POST\".", "file")
    url = value.get("url")
    if url not in ENDPOINTS:
        raise InvalidRequest(f"Line {n}: 'url' must be one of {', '.join(ENDPOINTS)}.", "file")
    body = value.get("body")
    if not isinstance(body, dict):
        raise InvalidRequest(f"Line {n}: 'body' must be a JSON object (the request's body).", "file")
    unknown = set(value) - {"custom_id", "method", "url", "body"}
    if unknown:
        raise InvalidRequest(f"Line {n}: unknown field '{sorted(unknown)[0]}'.", "file")
    return BatchLine(n, custom_id, url, body)
