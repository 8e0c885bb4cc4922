"""What every store can hold: a trace record made storable without losing the call.

PostgreSQL refuses NUL in text and the escape \\u0000 in jsonb; UTF-8 (both SQL backends, orjson,
the spill and dead-letter files) refuses lone surrogates; orjson refuses integers beyond 64 bits
and nesting deeper than 254 levels. Clients and upstreams can put any of these in a call, so rather
than lose its row (and its cost) the record is rewritten: such characters become U+FFFD, such
integers their decimal text, and nesting deeper than `MAX_DEPTH` a placeholder string. Attribution
values that rollups and indexes key on are cut to `MAX_KEY_CHARS` (a PostgreSQL index entry holds
at most ~2.7 kB). The record is tagged `keel.sanitized=<kinds>` (nul, surrogate, int, depth, key,
long) so a reader knows it is not byte for byte what was sent.

`storable` walks every value, so callers use it only after a cheap check (`clean_row`) or a
failed serialisation says a record needs it; a clean record costs nothing here.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import orjson

from keel.types import Span, TraceRecord

TAG = "keel.sanitized"  # on a rewritten record: what was replaced, comma-separated
MAX_DEPTH = 200  # JSON nesting kept; below orjson's 254 with room for the envelopes around a payload
MAX_KEY_CHARS = 256  # at most 1 kB of UTF-8: two of them fit in one PostgreSQL index entry
TOO_DEEP = "[keel: nested too deep]"
REPLACEMENT = "\ufffd"

SURROGATE = re.compile("[\ud800-\udfff]")
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what orjson writes: i64 and u64
TEXT_FIELDS = (
    "id", "endpoint", "tenant", "key_id", "user", "feature", "session", "alias", "provider", "model",
    "status", "error_kind", "error_message", "fallback", "prompt_version", "cache", "payload_blob",
)  # fmt: skip
# what indexes and rollup rows key on (the id is Keel's own: never cut, it keeps writes idempotent)
KEY_FIELDS = (
    "tenant", "key_id", "user", "feature", "session", "alias", "provider", "model", "prompt_version", "status",
)  # fmt: skip
_JSON = ("tags", "request", "response", "route", "attempt_log")


def clean_text(text: str) -> bool:
    """True when `text` can be stored as it is (the common case: one C scan, or two)."""
    return "\x00" not in text and (text.isascii() or SURROGATE.search(text) is None)


def storable(r: TraceRecord) -> TraceRecord:
    """`r` rewritten so every store can hold it, tagged with what changed; `r` itself if nothing had to."""
    fix = _Fix()
    changes: dict[str, Any] = {}
    for name in TEXT_FIELDS:
        value = getattr(r, name)
        if isinstance(value, str) and not clean_text(value):
            changes[name] = value = fix.text(value)
        if name in KEY_FIELDS and isinstance(value, str) and len(value) > MAX_KEY_CHARS:
            fix.kinds.add("long")
            changes[name] = value[: MAX_KEY_CHARS - 1] + "\u2026"
    for name in _JSON:
        value = getattr(r, name)
        new = fix.json(value, 1)
        if new is not value:
            changes[name] = new
    if not fix.kinds:
        return r
    tags = changes.get("tags", r.tags)
    changes["tags"] = {**(tags if isinstance(tags, dict) else {"tags": tags}), TAG: ",".join(sorted(fix.kinds))}
    return replace(r, **changes)


class _Fix:
    """One record's rewrite: returns values unchanged (the same object) unless something had to go."""

    def __init__(self) -> None:
        self.kinds: set[str] = set()

    def text(self, value: str) -> str:
        if "\x00" in value:
            self.kinds.add("nul")
            value = value.replace("\x00", REPLACEMENT)
        if not value.isascii() and SURROGATE.search(value):
            self.kinds.add("surrogate")
            value = SURROGATE.sub(REPLACEMENT, value)
        return value

    def json(self, value: Any, depth: int) -> Any:
        if isinstance(value, str):
            return value if clean_text(value) else self.text(value)
        if isinstance(value, bool) or not isinstance(value, int | dict | list | tuple):
            return value
        if isinstance(value, int):
            if _INT_MIN <= value <= _INT_MAX:
                return value
            self.kinds.add("int")
            return str(value)
        if depth > MAX_DEPTH:
            self.kinds.add("depth")
            return TOO_DEEP
        if isinstance(value, dict):
            return self._dict(value, depth)
        items = [self.json(v, depth + 1) for v in value]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value

    def _dict(self, value: dict[Any, Any], depth: int) -> dict[Any, Any]:
        out = {}
        changed = False
        for k, v in value.items():
            if isinstance(k, str):
                key = k if clean_text(k) else self.text(k)
            else:  # orjson writes only string keys
                self.kinds.add("key")
                key = str(k)
            new = self.json(v, depth + 1)
            changed = changed or key is not k or new is not v
            out[key] = new
        return out if changed else value


# ---- spans ---------------------------------------------------------------------------------------

MAX_SPAN_ATTRIBUTES = 16 * 1024  # bytes of JSON a span's attributes may take
MAX_SPAN_VALUE_CHARS = 1024  # a longer string attribute is cut when the whole is too large
_SPAN_TEXT = ("kind", "name", "status", "tenant", "parent_id")


def storable_span(s: Span) -> Span:
    """`s` rewritten so every store can hold it (as `storable` does a record) and its attributes
    bounded to `MAX_SPAN_ATTRIBUTES` bytes of JSON: long strings cut first, then the attributes
    replaced by their size. Tagged `keel.sanitized=<kinds>` in the attributes; `s` itself if clean."""
    fix = _Fix()
    changes: dict[str, Any] = {}
    for name in ("trace_id", "span_id", *_SPAN_TEXT):
        value = getattr(s, name)
        if isinstance(value, str) and not clean_text(value):
            changes[name] = value = fix.text(value)
        if name in _SPAN_TEXT and isinstance(value, str) and len(value) > MAX_KEY_CHARS:
            fix.kinds.add("long")
            changes[name] = value[: MAX_KEY_CHARS - 1] + "\u2026"
    attributes = fix.json(s.attributes if isinstance(s.attributes, dict) else {"value": s.attributes}, 1)
    size = len(orjson.dumps(attributes, default=str))
    if size > MAX_SPAN_ATTRIBUTES:
        fix.kinds.add("size")
        attributes = {k: _cut(v) for k, v in attributes.items()}
        if len(orjson.dumps(attributes, default=str)) > MAX_SPAN_ATTRIBUTES:
            attributes = {"keel.attributes_bytes": size}
    if attributes is not s.attributes:
        changes["attributes"] = attributes
    if not fix.kinds:
        return replace(s, **changes) if changes else s
    changes["attributes"] = {**attributes, TAG: ",".join(sorted(fix.kinds))}
    return replace(s, **changes)


def _cut(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_SPAN_VALUE_CHARS:
        return value[: MAX_SPAN_VALUE_CHARS - 1] + "\u2026"
    if isinstance(value, dict | list) and len(orjson.dumps(value, default=str)) > MAX_SPAN_VALUE_CHARS:
        return "[keel: too large]"
    return value
