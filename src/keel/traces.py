"""The trace writer: records leave the request path through a bounded queue to one writer thread.

Redaction (`scrub`) runs in that thread as records leave the queue, so nothing is written or
spilled unredacted, and its cost never lands on the event loop.

Invariants: `put` never blocks and never touches the database. Every record is either written,
spilled to a local file (queue overflow, or a store that keeps failing) and loaded back later, or
counted in `dropped` (only when the overflow buffer itself is full). A failed flush is retried, and
because inserts are idempotent by record id a retried or reloaded batch never duplicates. `close`
drains everything before it returns (the SIGTERM path).
Payloads (request + response JSON) above the blob threshold go to the blob store just before their
rows are inserted, so a row never points at a missing blob; spills keep the payloads inline, and a
crash between the two leaves an orphan blob that the retention sweep deletes.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from keel.errors import InvalidRequest
from keel.store.protocols import BlobStore, TraceQuery, TraceStore
from keel.types import TraceRecord

log = logging.getLogger("keel.traces")


@dataclass(slots=True)
class WriterStats:
    written: int = 0
    spilled: int = 0
    reloaded: int = 0
    dropped: int = 0
    failed_flushes: int = 0


class TraceWriter:
    RETRY_DELAYS = (0.05, 0.25, 1.0)

    def __init__(
        self,
        store: TraceStore,
        *,
        queue_size: int = 10_000,
        batch_size: int = 5000,
        flush_interval: float = 0.05,
        spill_dir: str | Path = ".keel/spill",
        overflow_limit: int = 100_000,
        scrub: Callable[[TraceRecord], TraceRecord] | None = None,
        blobs: BlobStore | None = None,
        blob_threshold: int | None = None,
    ) -> None:
        self._store = store
        self._scrub = scrub  # redaction, in this thread: before a record is written or spilled
        self._blobs = blobs
        self._blob_threshold = blob_threshold if blobs is not None else None
        self._queue: deque[TraceRecord] = deque()
        self._size = queue_size
        self._batch = batch_size
        self._interval = flush_interval
        self._spill_dir = Path(spill_dir)
        self._overflow: list[TraceRecord] = []
        self._overflow_limit = overflow_limit
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="keel-trace-writer", daemon=True)
        self._spill_seq = 0
        self.stats = WriterStats()

    @property
    def depth(self) -> int:
        return len(self._queue) + len(self._overflow)

    def start(self) -> None:
        self._thread.start()

    def put(self, record: TraceRecord) -> None:
        # One producer (the event loop); deque.append is atomic. No wake-up per record: the writer
        # drains on its own clock, so a busy gateway pays one transaction per flush interval.
        if len(self._queue) < self._size:
            self._queue.append(record)
        else:
            with self._lock:
                if len(self._overflow) >= self._overflow_limit:
                    self.stats.dropped += 1
                    return
                self._overflow.append(record)

    def close(self, timeout: float = 30.0) -> None:
        """Stop: write what is queued, spill what cannot be written, then return."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # ---- writer thread

    def _run(self) -> None:
        self._reload_spills()
        last_reload = time.monotonic()
        while True:
            stopping = self._stop.wait(self._interval)
            while batch := self._take():
                self._write(batch)
            if self._overflow:
                self._spill_overflow()
            if stopping and not self._queue and not self._overflow:
                break
            if time.monotonic() - last_reload > 1.0 and len(self._queue) < self._batch:
                self._reload_spills(limit=1)
                last_reload = time.monotonic()
        self._reload_spills()  # drain: spills of an outage that has ended go in before close returns

    def _take(self) -> list[TraceRecord]:
        batch: list[TraceRecord] = []
        popleft = self._queue.popleft
        try:
            while len(batch) < self._batch:
                batch.append(popleft())
        except IndexError:
            pass
        return self._scrubbed(batch)

    def _scrubbed(self, records: list[TraceRecord]) -> list[TraceRecord]:
        scrub = self._scrub
        return records if scrub is None else [scrub(r) for r in records]

    def _write(self, batch: list[TraceRecord]) -> None:
        for delay in (*self.RETRY_DELAYS, None):
            try:
                self._store.append_traces(self._externalise(batch))
                self.stats.written += len(batch)
                return
            except Exception as exc:
                self.stats.failed_flushes += 1
                log.warning(
                    "trace flush of %d records failed (%s); %s", len(batch), exc, "retrying" if delay else "spilling"
                )
                if delay is None or self._stop.is_set():
                    break
                time.sleep(delay)
        self._spill(batch)

    def _externalise(self, batch: list[TraceRecord]) -> list[TraceRecord]:
        """The batch with large payloads moved to the blob store (written first); others as they are."""
        if self._blob_threshold is None or self._blobs is None:
            return batch
        out = []
        for r in batch:
            data = payload_bytes(r)
            if data is None or len(data) <= self._blob_threshold or not _SAFE_ID.fullmatch(r.id):
                out.append(r)
                continue
            key = blob_key(r)
            self._blobs.put(key, data)
            out.append(replace(r, request=None, response=None, payload_blob=key))
        return out

    def _spill_overflow(self) -> None:
        with self._lock:
            pending, self._overflow = self._overflow, []
        pending = self._scrubbed(pending)
        if self._stop.is_set():
            self._write(pending)  # at shutdown, try the store first
        else:
            self._spill(pending)

    def _spill(self, records: list[TraceRecord]) -> None:
        self._spill_seq += 1
        path = self._spill_dir / f"traces-{time.time_ns()}-{os.getpid()}-{self._spill_seq}.jsonl"
        tmp = path.with_suffix(".tmp")
        try:
            self._spill_dir.mkdir(parents=True, exist_ok=True)
            with tmp.open("wb") as f:
                for r in records:
                    f.write(orjson.dumps(asdict(r), default=str) + b"\n")
            tmp.rename(path)
        except OSError as exc:  # the writer thread must survive a full or unwritable disk
            log.error("cannot spill %d trace records to %s (%s); dropped", len(records), self._spill_dir, exc)
            with self._lock:
                self.stats.dropped += len(records)
            return
        self.stats.spilled += len(records)

    def _reload_spills(self, limit: int | None = None) -> None:
        if not self._spill_dir.is_dir():
            return
        for path in sorted(self._spill_dir.glob("traces-*.jsonl"))[:limit]:
            try:
                records = [TraceRecord(**orjson.loads(line)) for line in path.read_bytes().splitlines() if line]
            except FileNotFoundError:
                continue  # another process sharing the spill dir took it
            except (ValueError, TypeError) as exc:  # cut short by a crash, or another version's fields
                log.error("cannot read spill %s (%s); set aside as .bad", path.name, exc)
                path.rename(path.with_suffix(".bad"))
                continue
            try:
                self._store.append_traces(self._externalise(records))
            except Exception as exc:
                log.warning("reloading %s failed (%s); will retry later", path.name, exc)
                return
            path.unlink(missing_ok=True)
            self.stats.reloaded += len(records)
            self.stats.written += len(records)


# ---- payload blobs ------------------------------------------------------------------------------

BLOB_PREFIX = "traces/"
_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def payload_bytes(r: TraceRecord) -> bytes | None:
    if r.request is None and r.response is None:
        return None
    return orjson.dumps({"request": r.request, "response": r.response}, default=str)


def blob_key(r: TraceRecord) -> str:
    """traces/<UTC day>/<trace id>.json: the day keeps directories small; the id names the row."""
    return f"{BLOB_PREFIX}{time.strftime('%Y-%m-%d', time.gmtime(r.started_at))}/{r.id}.json"


def trace_id_of(key: str) -> str | None:
    """The trace id a blob key stands for; None for a key Keel did not write."""
    name = key.rsplit("/", 1)[-1]
    if not key.startswith(BLOB_PREFIX) or not name.endswith(".json"):
        return None
    return name.removesuffix(".json")


def with_payload(r: TraceRecord, blobs: BlobStore | None) -> TraceRecord:
    """The record with its payload read back from the blob store, when it was kept there."""
    if r.payload_blob is None or blobs is None:
        return r
    data = blobs.get(r.payload_blob)
    if data is None:
        log.warning("trace %s: payload blob %s is missing", r.id, r.payload_blob)
        return r
    payload = orjson.loads(data)
    return replace(r, request=payload.get("request"), response=payload.get("response"))


def read_trace(store: TraceStore, blobs: BlobStore | None, trace_id: str) -> TraceRecord | None:
    """One trace in full (blocking: run it in a thread), its payload fetched from the blob store."""
    row = store.get_trace(trace_id)
    return None if row is None else with_payload(row, blobs)


# ---- reading traces back (shared by the admin API and the CLI) --------------------------------

FILTERS = ("tenant", "key_id", "user", "feature", "session", "alias", "status")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def trace_view(r: TraceRecord, full: bool) -> dict[str, Any]:
    out = asdict(r)
    if not full:
        out.pop("request")
        out.pop("response")
    return out


def parse_window(since: str | None, until: str | None, now: float) -> tuple[float, float]:
    """`since`/`until`: unix seconds, or a duration back from now such as 15m, 24h, 7d."""
    start = now - 86400.0 if since is None else _instant(since, now, "since")
    end = now + 1.0 if until is None else _instant(until, now, "until")
    return start, end


def _instant(text: str, now: float, name: str) -> float:
    try:
        if text[-1:] in _UNITS:
            return now - float(text[:-1]) * _UNITS[text[-1]]
        return float(text)
    except ValueError:
        raise InvalidRequest(f"'{name}' must be unix seconds or a duration like 15m, 24h, 7d.", name) from None


def trace_query(params: dict[str, str], now: float) -> TraceQuery:
    """A bounded TraceQuery from string parameters (query string or CLI flags)."""
    since, until = parse_window(params.get("since"), params.get("until"), now)
    try:
        limit = min(1000, max(1, int(params.get("limit", "50"))))
    except ValueError:
        raise InvalidRequest("'limit' must be an integer.", "limit") from None
    filters = {k: params[k] for k in FILTERS if k in params}
    return TraceQuery(since=since, until=until, limit=limit, **filters)
