"""The trace writer's local files: spills waiting to be loaded back, and the dead letter.

A spill file (`traces-<ns>-<pid>-<seq>.jsonl`) holds records the store could not take when they
were due (an outage, a full queue), one JSON object per line with the `TraceRecord` fields, or
`{"span": {...}}` for a child span (`Span`, keel.traces.spans.span_dict). It is
written whole to a `.tmp` file and renamed, so a crash never leaves half of one; the writer loads
spill files back in name order and deletes each once its records are stored or quarantined.

The dead letter (`deadletter.jsonl`) holds records no store will take as they are, one JSON line
each: `{"at": unix seconds, "reason": "...", "record": {...}}` (`"span": {...}` for a span, `"line": "..."`
for a spill line that could not even be read). Its size is bounded: once it holds half of `max_bytes` it becomes
`deadletter.1.jsonl` (replacing the previous one) and a new file starts, so the two stay under
`max_bytes`. `keel traces deadletter` lists both; `--requeue` turns them back into a spill file
for the running writer (after a fix: a record refused again returns to the dead letter).
Records reach these files already redacted: the writer scrubs them first.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

import orjson

from keel.store.storable import storable
from keel.traces.spans import span_dict, span_from_dict
from keel.types import Span, TraceRecord

DEADLETTER = "deadletter.jsonl"
ROTATED = "deadletter.1.jsonl"
_FIELDS = frozenset(f.name for f in fields(TraceRecord))
Item = TraceRecord | Span  # what the trace writer carries


def record_line(r: Item) -> bytes:
    """One record (or span) as a JSON line; a record orjson cannot write is made storable first. Raises
    TypeError or RecursionError for one that still cannot be written."""
    if isinstance(r, Span):
        return orjson.dumps({"span": span_dict(r)}, default=str) + b"\n"
    try:
        return orjson.dumps(asdict(r), default=str) + b"\n"
    except (TypeError, RecursionError):
        return orjson.dumps(asdict(storable(r)), default=str) + b"\n"


def parse_record(line: bytes) -> Item:
    """A record (or span) from a spill line. Raises ValueError for a line that does not hold one."""
    value = orjson.loads(line)
    if isinstance(value, dict) and value.keys() == {"span"}:
        return span_from_dict(value["span"])
    return record_from(value)


def record_from(value: Any) -> TraceRecord:
    """A record from its decoded JSON object. Raises ValueError for anything else."""
    if not isinstance(value, dict) or not {"id", "started_at"} <= value.keys():
        raise ValueError("not a trace record (no id and started_at)")
    unknown = value.keys() - _FIELDS
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}")
    return TraceRecord(**value)


class SpillDir:
    def __init__(self, path: str | Path, deadletter_max_bytes: int = 64 * 2**20) -> None:
        self.path = Path(path)
        self._max = deadletter_max_bytes
        self._seq = 0

    # ---- spills

    def spill(self, records: list[Item]) -> list[tuple[Item, str]]:
        """Write `records` to a new spill file; the ones that cannot be written as JSON, with why.
        Raises OSError when the file cannot be written (nothing is then spilled)."""
        lines, refused = [], []
        for r in records:
            try:
                lines.append(record_line(r))
            except (TypeError, RecursionError) as exc:
                refused.append((r, f"cannot be written as JSON: {type(exc).__name__}: {exc}"))
        if not lines:
            return refused
        self._seq += 1
        path = self.path / f"traces-{time.time_ns()}-{os.getpid()}-{self._seq}.jsonl"
        tmp = path.with_suffix(".tmp")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(b"".join(lines))
            tmp.rename(path)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        return refused

    def spills(self) -> list[Path]:
        """Spill files, oldest first."""
        if not self.path.is_dir():
            return []
        return sorted(self.path.glob("traces-*.jsonl"))

    def read(self, path: Path) -> tuple[list[Item], list[tuple[bytes, str]]]:
        """The records of a spill file, and its lines that hold none (with why). Raises OSError."""
        records, bad = [], []
        for line in path.read_bytes().splitlines():
            if not line.strip():
                continue
            try:
                records.append(parse_record(line))
            except (ValueError, TypeError) as exc:  # cut short, another version's fields, not JSON
                bad.append((line, f"unreadable spill line in {path.name}: {exc}"))
        return records, bad

    def set_aside(self, path: Path) -> None:
        """Keep a spill file that cannot be read at all out of the way, for a person to look at."""
        with contextlib.suppress(OSError):  # gone, or the directory refuses: the next pass meets it again
            path.rename(path.with_suffix(".bad"))

    # ---- the dead letter

    def quarantine(self, record: Item | bytes, reason: str) -> None:
        """Append one entry to the dead letter. Raises OSError when it cannot be written."""
        entry = _entry(record, reason, at=time.time())
        if len(entry) > self._max // 8:  # a huge payload: keep the record's facts, not its request
            entry = _entry(_without_payload(record), reason + " (payload omitted: too large)", at=time.time())
        self._append(entry)

    def _append(self, data: bytes) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        current = self.path / DEADLETTER
        try:
            size = current.stat().st_size
        except FileNotFoundError:
            size = 0
        if size and size + len(data) > self._max // 2:
            current.replace(self.path / ROTATED)
        fd = os.open(current, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def deadletters(self) -> list[dict[str, Any]]:
        """Dead-letter entries, oldest first (a cut last line is skipped)."""
        out = []
        for name in (ROTATED, DEADLETTER):
            try:
                data = (self.path / name).read_bytes()
            except FileNotFoundError:
                continue
            for line in data.splitlines():
                try:
                    out.append(orjson.loads(line))
                except orjson.JSONDecodeError:
                    continue
        return out

    def requeue(self) -> tuple[int, int]:
        """Move dead-lettered records into a spill file for the writer to load again. Returns
        (records requeued, entries kept in the dead letter: spill lines that held no record)."""
        taken = []
        for name in (ROTATED, DEADLETTER):
            path = self.path / name
            claimed = path.with_name(f"{path.stem}.requeue-{os.getpid()}")
            try:
                path.rename(claimed)  # new entries go to a new file meanwhile
            except FileNotFoundError:
                continue
            taken.append(claimed)
        records: list[Item] = []
        keep = []
        for path in taken:
            for line in path.read_bytes().splitlines():
                try:
                    entry = orjson.loads(line)
                    records.append(span_from_dict(entry["span"]) if "span" in entry else record_from(entry["record"]))
                except (ValueError, TypeError, KeyError):
                    keep.append(line + b"\n")
        refused = self.spill(records) if records else []
        for r, reason in refused:
            self.quarantine(r, reason)
        if keep:
            self._append(b"".join(keep))
        for path in taken:
            path.unlink()
        return len(records) - len(refused), len(keep) + len(refused)


def _without_payload(record: Item | bytes) -> Item | bytes:
    if isinstance(record, bytes):
        return record[:4096]
    if isinstance(record, Span):
        return replace(record, attributes={})
    return replace(record, request=None, response=None, attempt_log=None)


def _entry(record: Item | bytes, reason: str, at: float) -> bytes:
    head: dict[str, Any] = {"at": at, "reason": reason}
    if isinstance(record, bytes):
        return orjson.dumps({**head, "line": record.decode("utf-8", "replace")}) + b"\n"
    try:
        body = record_line(record)
    except (TypeError, RecursionError) as exc:  # keep what identifies the call
        head["reason"] += f"; record not writable as JSON ({type(exc).__name__})"
        if isinstance(record, Span):
            return orjson.dumps({**head, "span": {"trace_id": record.trace_id, "span_id": record.span_id}}) + b"\n"
        return orjson.dumps({**head, "id": record.id, "started_at": record.started_at}) + b"\n"
    if isinstance(record, Span):  # its line is {"span": {...}}: the entry takes its object as it is
        return orjson.dumps(head)[:-1] + b"," + body.rstrip(b"\n")[1:] + b"\n"
    return orjson.dumps(head)[:-1] + b',"record":' + body.rstrip(b"\n") + b"}\n"
