"""The trace writer: records leave the request path through a bounded queue to one writer thread.

Invariants: `put` never blocks and never touches the database. Every record is either written,
spilled to a local file (queue overflow, or a store that keeps failing) and loaded back later, or
counted in `dropped` (only when the overflow buffer itself is full). A failed flush is retried, and
because inserts are idempotent by record id a retried or reloaded batch never duplicates. `close`
drains everything before it returns (the SIGTERM path).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from keel.errors import InvalidRequest
from keel.store.protocols import TraceQuery, TraceStore
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
        batch_size: int = 2000,
        flush_interval: float = 0.05,
        spill_dir: str | Path = ".keel/spill",
        overflow_limit: int = 100_000,
    ) -> None:
        self._store = store
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
        return batch

    def _write(self, batch: list[TraceRecord]) -> None:
        for delay in (*self.RETRY_DELAYS, None):
            try:
                self._store.append_traces(batch)
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

    def _spill_overflow(self) -> None:
        with self._lock:
            pending, self._overflow = self._overflow, []
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
                self._store.append_traces(records)
            except Exception as exc:
                log.warning("reloading %s failed (%s); will retry later", path.name, exc)
                return
            path.unlink(missing_ok=True)
            self.stats.reloaded += len(records)
            self.stats.written += len(records)


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
