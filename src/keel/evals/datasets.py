"""Dataset items in and out: JSONL and CSV import and export, and items sampled from traces.

JSONL: one item per line, `{"input": {"messages": [...]} | {"vars": {...}}, "expected", "context",
"metadata"}`; the flat forms `{"vars": ..., "expected": ...}` and `{"messages": [...]}` are read too.
CSV (promptfoo's test files): each column is a var, except `expected` / `__expected`, `context` and
`__description`. Items from traces keep the chat that was sent (`input.messages`), the answer it got as
`expected` (a reference to compare later answers with) and the trace's id, so a dataset item leads back
to the call it came from.
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from keel.evals.assertions import InvalidSuite
from keel.store.protocols import DatasetItem
from keel.types import TraceRecord

ITEM_KEYS = frozenset({"input", "vars", "messages", "expected", "context", "metadata", "trace_id"})
MAX_ITEMS = 100_000


def item_of(doc: Any, where: str) -> DatasetItem:
    if not isinstance(doc, Mapping):
        raise InvalidSuite("an item is a JSON object", where)
    extra = sorted(set(doc) - ITEM_KEYS)
    if extra:
        raise InvalidSuite(f"unknown key(s) {extra}; an item takes {sorted(ITEM_KEYS)}", where)
    given = doc.get("input")
    source: Mapping[str, Any] = given if isinstance(given, Mapping) else doc
    inp: dict[str, Any] = {}
    if source.get("messages") is not None:
        if not isinstance(source["messages"], list):
            raise InvalidSuite("`messages` is a list of chat messages", f"{where}.messages")
        inp["messages"] = source["messages"]
    if source.get("vars") is not None:
        if not isinstance(source["vars"], Mapping):
            raise InvalidSuite("`vars` is an object", f"{where}.vars")
        inp["vars"] = dict(source["vars"])
    if not inp:
        raise InvalidSuite("an item needs `messages` or `vars` (under `input` or at the top)", where)
    expected = doc.get("expected")
    context = doc.get("context") or ()
    if isinstance(context, str):
        context = (context,)
    metadata = doc.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise InvalidSuite("`metadata` is an object", f"{where}.metadata")
    return DatasetItem(
        inp,
        None if expected is None else expected if isinstance(expected, str) else json.dumps(expected),
        tuple(str(c) for c in context),
        dict(metadata),
        doc.get("trace_id") if isinstance(doc.get("trace_id"), str) else None,
    )


def read_jsonl(text: str, name: str = "jsonl") -> list[DatasetItem]:
    items = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except ValueError as exc:
            raise InvalidSuite(f"not JSON: {exc}", f"{name}:{n}") from None
        items.append(item_of(doc, f"{name}:{n}"))
        if len(items) > MAX_ITEMS:
            raise InvalidSuite(f"more than {MAX_ITEMS} items", name)
    return items


def read_csv(text: str, name: str = "csv") -> list[DatasetItem]:
    """promptfoo's test CSV: `__expected` is an assertion (`contains: x`, `not-icontains: y`; plain text
    is `equals`), kept in metadata `assert`; `expected` is the expected output itself."""
    items = []
    for n, row in enumerate(csv.DictReader(io.StringIO(text)), 2):
        variables = {k: v for k, v in row.items() if k and not k.startswith("__") and k not in ("expected", "context")}
        expected = row.get("expected") or None
        metadata: dict[str, Any] = {"description": row["__description"]} if row.get("__description") else {}
        if row.get("__expected"):
            metadata["assert"] = [_csv_assertion(row["__expected"])]
        context = (row["context"],) if row.get("context") else ()
        items.append(DatasetItem({"vars": variables}, expected, context, metadata))
        if len(items) > MAX_ITEMS:
            raise InvalidSuite(f"more than {MAX_ITEMS} items", f"{name}:{n}")
    return items


def _csv_assertion(text: str) -> dict[str, Any]:
    from keel.evals.assertions import TYPES

    kind, colon, value = text.partition(":")
    if colon and kind.strip().removeprefix("not-") in TYPES:
        return {"type": kind.strip(), "value": value.strip()}
    return {"type": "equals", "value": text}


def write_jsonl(items: Iterable[DatasetItem]) -> str:
    return "".join(json.dumps(it.json(), ensure_ascii=False) + "\n" for it in items)


def write_csv(items: Sequence[DatasetItem]) -> str:
    names = sorted({k for it in items for k in (it.input.get("vars") or {})})
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*names, "expected", "context", "__description", "__trace_id"])
    for it in items:
        if it.input.get("messages") and not it.input.get("vars"):
            raise InvalidSuite("items holding chats (input.messages) export as JSONL, not CSV", "format")
        row_vars = it.input.get("vars") or {}
        writer.writerow([
            *(_cell(row_vars.get(k)) for k in names), it.expected or "", "\n\n".join(it.context),
            it.metadata.get("description", ""), it.trace_id or "",
        ])  # fmt: skip
    return out.getvalue()


def _cell(value: Any) -> str:
    return "" if value is None else value if isinstance(value, str) else json.dumps(value)


def matches(record: TraceRecord, where: Mapping[str, str]) -> bool:
    """`--where key=value` on a trace: a column (status, alias, model, provider, user, session) or a tag."""
    for key, want in where.items():
        value = getattr(record, key, None) if key in _COLUMNS else (record.tags or {}).get(key)
        if value is None or str(value) != want:
            return False
    return True


_COLUMNS = frozenset({"status", "alias", "model", "provider", "user", "session", "feature", "cache", "endpoint"})


def sample(records: Sequence[TraceRecord], n: int, seed: int | None = None) -> list[TraceRecord]:
    """`n` records picked at random without replacement (all when there are fewer), oldest first."""
    picked = list(records) if len(records) <= n else random.Random(seed).sample(list(records), n)
    return sorted(picked, key=lambda r: r.started_at)


def item_from_trace(record: TraceRecord) -> DatasetItem | None:
    """The item a chat trace stands for (None when its payload was not kept or it is not a chat)."""
    request, response = record.request, record.response
    if not isinstance(request, Mapping) or not isinstance(request.get("messages"), list):
        return None
    expected = None
    if isinstance(response, Mapping):  # the trace's own shape ({content, tool_calls, ...}), or OpenAI's
        content = response.get("content")
        choices = response.get("choices") or []
        if content is None and choices and isinstance(choices[0], Mapping):
            content = (choices[0].get("message") or {}).get("content")
        expected = content if isinstance(content, str) else None
    metadata = {k: v for k, v in (("alias", record.alias), ("model", record.model), ("feature", record.feature)) if v}
    return DatasetItem({"messages": request["messages"]}, expected, (), metadata, record.id)
