"""The trace writer: records leave the request path through a bounded queue to one writer thread.

Redaction (`scrub`) runs in that thread as records leave the queue, so nothing is written or
spilled unredacted, and its cost never lands on the event loop.

Invariants: `put` never blocks and never touches the database. Every record is either written,
spilled to a local file (queue overflow, or a store that keeps failing) and loaded back later,
quarantined to the dead-letter file (a record no store will take), or counted in `dropped` (only
when the overflow buffer is full, or the disk refuses a spill). A failed flush is retried, and
because inserts are idempotent by record id a retried or reloaded batch never duplicates. `close`
drains everything before it returns (the SIGTERM path).
One record never stops the others: a batch the store refuses for a record's content (or that fails
while the store takes other writes) is split in halves until each refused record is alone; the rest
is written. That costs nothing until a batch fails. Whatever the loop raises, even a driver's
SystemExit, its supervisor spills the batch in hand and starts it again; `health()` says why the
writer cannot write (crashed, stalled in a store call, or losing records) for /readyz and /metrics.
Payloads (request + response JSON) above the blob threshold go to the blob store just before their
rows are inserted, so a row never points at a missing blob; spills keep the payloads inline, and a
crash between the two leaves an orphan blob that the retention sweep deletes.
Child spans (`put_span`; keel.traces.spans) travel the same way: the same queue, batches, spill files
and dead letter, written beside their records (`SpanStore.append_spans`, idempotent by span id). A
call's upstream attempts become spans here, on this thread, and only for a call that made more than
one; a writer built without a span store carries records only.
"""

from __future__ import annotations

import logging
import math
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from keel.errors import InvalidRequest
from keel.store.protocols import BlobStore, SpanStore, TraceQuery, TraceStore
from keel.store.storable import storable
from keel.traces.spans import attempt_spans, span_dict
from keel.traces.spill import Item, SpillDir
from keel.types import Span, TraceRecord

log = logging.getLogger("keel.traces")
RELOAD_SWITCH_S = 0.0005  # the GIL's switch interval while spill files load back (see _reload_spills)


@dataclass(slots=True)
class WriterStats:
    written: int = 0
    spans: int = 0  # child spans written (besides the records counted in `written`)
    spilled: int = 0
    reloaded: int = 0
    dropped: int = 0
    failed_flushes: int = 0
    quarantined: int = 0  # records no store would take, kept in the dead-letter file
    restarts: int = 0  # times the writer loop crashed and was started again
    last_error: str | None = None  # the latest failure's kind (a store write, a spill, a crash); details are logged
    last_error_at: float | None = None  # unix seconds


def refused(exc: BaseException) -> bool:
    """Whether a failed write blames the records (serialising or storing them), not the store."""
    return isinstance(exc, ValueError | TypeError | ArithmeticError | RecursionError)


def describe(exc: BaseException) -> str:
    """The exception with its message, for logs and the dead letter (local, like the records)."""
    return f"{type(exc).__name__}: {exc}"[:500]


def kind(exc: BaseException) -> str:
    """The exception's type, and its cause's: all /readyz shows, since a message may quote a record."""
    cause = exc.__cause__
    return type(exc).__name__ + (f" ({type(cause).__name__})" if cause is not None else "")


class TraceWriter:
    RETRY_DELAYS = (0.05, 0.25, 1.0)
    RESTART_DELAYS = (0.1, 0.5, 2.0, 5.0)

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
        deadletter_max_bytes: int = 64 * 2**20,
        stall_after: float = 15.0,
        spans: SpanStore | None = None,
        scrub_span: Callable[[Span], Span] | None = None,
    ) -> None:
        self._store = store
        self._spans = spans  # None: spans are not kept (put_span drops them), nor derived from attempts
        self._scrub_span = scrub_span  # redaction of a span's attributes, in this thread
        self._scrub = scrub  # redaction, in this thread: before a record is written or spilled
        self._blobs = blobs
        self._blob_threshold = blob_threshold if blobs is not None else None
        self._queue: deque[Item] = deque()
        self._size = queue_size
        self._batch = batch_size
        self._interval = flush_interval
        self.files = SpillDir(spill_dir, deadletter_max_bytes)
        self._overflow: list[Item] = []
        self._overflow_limit = overflow_limit
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="keel-trace-writer", daemon=True)
        self._started = False
        self._stall_after = stall_after
        self._in_hand: list[Item] = []  # the batch being written: spilled if the loop crashes
        self._busy_since: float | None = None  # monotonic start of the store call in progress
        self._crash: str | None = None  # why the loop crashed, until it has run a whole cycle again
        self._losing = False  # the last batch could be neither written nor spilled
        self._last_ok = 0.0  # monotonic time of the last write the store took
        self._failed_spills: dict[Path, float] = {}  # spill file → when the store last failed to take it
        self.stats = WriterStats()
        # A flush barrier: every record put before `accepted` read n has been written, spilled, quarantined or
        # dropped once `settled` reaches n (tests wait on it instead of sleeping a flush interval).
        self.accepted = 0
        self.settled = 0

    @property
    def depth(self) -> int:
        return len(self._queue) + len(self._overflow)

    def start(self) -> None:
        self._started = True
        self._thread.start()

    def put(self, record: Item) -> None:
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
        self.accepted += 1

    def put_span(self, span: Span) -> None:
        """Queue a child span of a call (keel.traces.spans.child_span): as cheap as `put`, never blocks."""
        if self._spans is not None:
            self.put(span)

    def close(self, timeout: float = 30.0) -> None:
        """Stop: write what is queued, spill what cannot be written, then return."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def health(self) -> str | None:
        """Why the writer cannot write now (for /readyz and /metrics); None while it can."""
        if (failing := self.failing()) is not None:
            return failing
        busy = self._busy_since
        if busy is not None and (held := time.monotonic() - busy) > self._stall_after:
            return f"stalled: a store write has not returned for {held:.0f} s"
        return None

    def failing(self) -> str | None:
        """Why records may be lost now: crashed, not running, or neither written nor spilled. A stalled
        store is not such a reason: records wait in the queue and the spill, and calls are served."""
        if self._crash is not None:
            return f"crashed ({self._crash}); restarting"
        if self._started and not self._thread.is_alive() and not self._stop.is_set():
            return "its thread is not running"
        if self._losing:
            return f"losing records: they can be neither written nor spilled ({self.stats.last_error})"
        return None

    # ---- writer thread

    def _supervise(self) -> None:
        """The thread: runs the loop, and after anything it raises spills the batch in hand and runs it again."""
        crashes = 0
        while True:
            began = time.monotonic()
            try:
                self._run()
                return
            except BaseException as exc:  # even a driver's SystemExit must not end trace writing quietly
                self.stats.restarts += 1
                self._crash = kind(exc)
                self._note(exc)
                crashes = 1 if time.monotonic() - began > 60 else crashes + 1
                delay = self.RESTART_DELAYS[min(crashes, len(self.RESTART_DELAYS)) - 1]
                log.critical("the trace writer crashed; restarting in %.1f s", delay, exc_info=exc)
                self._rescue()
                if not self._stop.wait(delay):
                    continue
                time.sleep(0.1)  # stopping: drain again soon, within close's timeout

    def _rescue(self) -> None:
        pending, self._in_hand = self._in_hand, []
        if pending:
            try:
                self._spill(pending)
            except BaseException as exc:
                self._note(exc)
                self._drop(len(pending))
            self.settled += len(pending)

    def _run(self) -> None:
        self._reload_spills()
        last_reload = time.monotonic()
        while True:
            stopping = self._stop.wait(self._interval)
            while batch := self._take():
                self._write(batch)
            if self._overflow:
                self._spill_overflow()
            self._crash = None  # a whole cycle ran
            if stopping and not self._queue and not self._overflow:
                break
            if time.monotonic() - last_reload > 1.0 and len(self._queue) < self._batch:
                self._reload_spills(limit=1)
                last_reload = time.monotonic()
        self._reload_spills()  # drain: spills of an outage that has ended go in before close returns

    def _take(self) -> list[Item]:
        batch: list[Item] = []
        popleft = self._queue.popleft
        try:
            while len(batch) < self._batch:
                batch.append(popleft())
        except IndexError:
            pass
        return self._scrubbed(batch)

    def _scrubbed(self, items: list[Item]) -> list[Item]:
        scrub, scrub_span = self._scrub, self._scrub_span
        if scrub is None and scrub_span is None:
            return items
        out: list[Item] = []
        for r in items:
            if isinstance(r, TraceRecord):
                out.append(r if scrub is None else scrub(r))
            else:
                out.append(r if scrub_span is None else scrub_span(r))
        return out

    def _write(self, batch: list[Item]) -> None:
        self._in_hand = batch
        left = self._store_records(batch, retry=True)
        if left:
            self._spill(left)
        self._in_hand = []
        self.settled += len(batch)

    def _store_records(self, records: list[Item], *, retry: bool, blame: bool = False) -> list[Item]:
        """Write `records`, retrying a store failure; the records the store refuses go to the dead
        letter. Returns those left unwritten because the store is away."""
        exc = self._attempt(records)
        for delay in self.RETRY_DELAYS if retry else ():
            if exc is None or refused(exc) or self._stop.is_set():
                break
            time.sleep(delay)
            exc = self._attempt(records)
        return [] if exc is None else self._isolate(records, exc, blame)

    def _isolate(self, records: list[Item], exc: Exception, blame: bool) -> list[Item]:
        """After `records` failed with `exc`: if the records are to blame (the error says so, or the
        store just took their sibling half), split them until each refused record is alone and
        quarantine it. Returns the records left unwritten because the store is away."""
        if not (blame or refused(exc)):
            return records
        if len(records) == 1:
            self._quarantine(records[0], describe(exc))
            return []
        half = len(records) // 2
        parts = [(part, self._attempt(part)) for part in (records[:half], records[half:])]
        took = any(e is None for _, e in parts)
        left: list[Item] = []
        for part, e in parts:
            if e is not None:
                left += self._isolate(part, e, took)
        return left

    def _attempt(self, items: list[Item]) -> Exception | None:
        """One store write of `items` (records, then spans): None when it took them, else what it raised."""
        records, spans = self._split(items)
        self._busy_since = time.monotonic()
        try:
            if records:
                self._store.append_traces(self._externalise(records))
            if spans and self._spans is not None:
                self._spans.append_spans(spans)
        except Exception as exc:
            self.stats.failed_flushes += 1
            self._note(exc)
            log.warning("trace write of %d records failed (%s)", len(records), describe(exc))
            return exc
        finally:
            self._busy_since = None
        self.stats.written += len(records)
        self.stats.spans += len(spans)
        self._last_ok = time.monotonic()
        self._losing = False
        return None

    def _split(self, items: list[Item]) -> tuple[list[TraceRecord], list[Span]]:
        """The records of `items`, and the spans to write with them: those put, and the attempts of
        each record that made more than one (none without a span store)."""
        records: list[TraceRecord] = []
        spans: list[Span] = []
        derive = self._spans is not None
        for r in items:
            if isinstance(r, TraceRecord):
                records.append(r)
                if derive and r.attempt_log is not None and len(r.attempt_log) > 1:
                    spans += attempt_spans(r)
            else:
                spans.append(r)
        return records, spans

    def _externalise(self, batch: list[TraceRecord]) -> list[TraceRecord]:
        """The batch with large payloads moved to the blob store (written first); others as they are."""
        if self._blob_threshold is None or self._blobs is None:
            return batch
        out = []
        for r in batch:
            try:
                data = payload_bytes(r)
            except TypeError:  # JSON orjson refuses: stored rewritten, as the store would
                r = storable(r)
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
            return
        self._in_hand = pending
        self._spill(pending)
        self._in_hand = []
        self.settled += len(pending)

    def _spill(self, records: list[Item]) -> None:
        try:
            unwritable = self.files.spill(records)
        except Exception as exc:  # the writer thread must survive a full or unwritable disk
            self._note(exc)
            log.error("cannot spill %d trace records to %s (%s); dropped", len(records), self.files.path, exc)
            self._drop(len(records))
            self._losing = True
            return
        for r, reason in unwritable:
            self._quarantine(r, reason)
        self.stats.spilled += len(records) - len(unwritable)
        self._losing = False

    def _reload_spills(self, limit: int | None = None) -> None:
        """Load spill files back, oldest first. A file the store fails to take for the store's sake
        is skipped and the next one tried: a second such failure means the store is away (until
        the next pass); a success means the first file's records are to blame, so it is split.

        Meanwhile the GIL changes hands every RELOAD_SWITCH_S instead of Python's 5 ms: a reload is
        seconds of Python work beside the event loop, which would otherwise wait up to 5 ms for the
        GIL each time a socket wakes it (bench/reload_lag.py)."""
        try:
            paths = self.files.spills()
        except OSError as exc:
            self._note(exc)
            return
        self._failed_spills = {p: t for p, t in self._failed_spills.items() if p in paths}
        if not paths:
            return
        switch = sys.getswitchinterval()
        sys.setswitchinterval(min(switch, RELOAD_SWITCH_S))
        try:
            self._reload_paths(paths, limit)
        finally:
            sys.setswitchinterval(switch)

    def _reload_paths(self, paths: list[Path], limit: int | None) -> None:
        blocked: Path | None = None
        loaded = 0
        for path in paths:
            if limit is not None and loaded >= limit and blocked is None:
                return
            if not self._reload(path):
                if blocked is not None:
                    return
                blocked = path
                continue
            loaded += 1
            if blocked is not None:
                self._reload(blocked)
                blocked = None

    def _reload(self, path: Path) -> bool:
        """Load one spill file: True once it is gone (loaded, quarantined, or taken by another process)."""
        try:
            records, bad = self.files.read(path)
        except FileNotFoundError:
            return True  # another process sharing the spill dir took it
        except OSError as exc:
            self._note(exc)
            log.error("cannot read spill %s (%s); set aside as .bad", path.name, exc)
            self.files.set_aside(path)
            return True
        for line, reason in bad:
            self._quarantine(line, reason)
        failed = self._failed_spills.get(path)
        before = self.stats.written
        blame = failed is not None and self._last_ok > failed
        left = self._store_records(records, retry=False, blame=blame) if records else []
        self.stats.reloaded += self.stats.written - before
        if left and len(left) == len(records) and not bad:
            self._failed_spills[path] = time.monotonic()
            return False
        if left:  # the rest, without what is now stored or quarantined
            self._spill(left)
        path.unlink(missing_ok=True)
        return not left

    # ---- failures

    def _quarantine(self, record: Item | bytes, reason: str) -> None:
        if isinstance(record, Span):
            what = f"{record.trace_id} span {record.span_id}"
        else:
            what = record.id if isinstance(record, TraceRecord) else "(a spill line)"
        try:
            self.files.quarantine(record, reason)
        except Exception as exc:
            self._note(exc)
            log.error("trace %s is refused (%s) and cannot be quarantined (%s); dropped", what, reason, exc)
            self._drop(1)
            return
        self.stats.quarantined += 1
        log.error("trace %s quarantined to %s: %s", what, self.files.path, reason)

    def _drop(self, n: int) -> None:
        with self._lock:
            self.stats.dropped += n

    def _note(self, exc: BaseException) -> None:
        self.stats.last_error, self.stats.last_error_at = kind(exc), time.time()


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


def read_spans(store: SpanStore, trace_id: str) -> list[Span]:
    """The child spans of one trace, in start order (blocking: run it in a thread)."""
    return store.trace_spans(trace_id)


# ---- reading traces back (shared by the admin API and the CLI) --------------------------------

FILTERS = ("tenant", "key_id", "user", "feature", "session", "alias", "status")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def trace_view(r: TraceRecord, full: bool, spans: list[Span] | None = None) -> dict[str, Any]:
    """A trace as JSON; with `spans` (its child spans, read_spans) under the key `spans`."""
    out = asdict(r)
    if not full:
        out.pop("request")
        out.pop("response")
    if spans is not None:
        out["spans"] = [span_dict(s) for s in spans]
    return out


def parse_window(since: str | None, until: str | None, now: float) -> tuple[float, float]:
    """`since`/`until`: unix seconds, or a duration back from now such as 15m, 24h, 7d."""
    start = now - 86400.0 if since is None else _instant(since, now, "since")
    end = now + 1.0 if until is None else _instant(until, now, "until")
    return start, end


def _instant(text: str, now: float, name: str) -> float:
    try:
        value = now - float(text[:-1]) * _UNITS[text[-1]] if text[-1:] in _UNITS else float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):  # nan, inf, 1e999 and 1e308d would reach the store as NaN or infinity
        raise InvalidRequest(f"'{name}' must be unix seconds or a duration like 15m, 24h, 7d.", name)
    return value


def trace_query(params: dict[str, str], now: float) -> TraceQuery:
    """A bounded TraceQuery from string parameters (query string or CLI flags)."""
    since, until = parse_window(params.get("since"), params.get("until"), now)
    try:
        limit = min(1000, max(1, int(params.get("limit", "50"))))
    except ValueError:
        raise InvalidRequest("'limit' must be an integer.", "limit") from None
    filters = {k: params[k] for k in FILTERS if k in params}
    return TraceQuery(since=since, until=until, limit=limit, **filters)
