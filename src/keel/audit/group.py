"""Group commit for the audit log: entries queued by concurrent callers are sealed in one transaction.

One writer thread takes whatever is queued (up to `MAX_BATCH`), numbers and chains it in queue order in
one transaction (`AuditStore.append_audits`), then resolves each caller's future. A caller therefore
waits for its own entry to be committed, exactly as with one transaction per entry (nothing is weakened:
an entry a caller was told about is durable), but concurrent callers share one commit flush instead of
queueing on the chain's head row one flush each.

An entry submitted with `durable=False` may be committed without waiting for the WAL flush
(`AuditStore.append_audits`), but only in a batch of such entries: a batch holding any durable entry is
committed durably, so a durable caller is never told about an entry that is not on disk.

An entry submitted with a `claim` is written only if its call moves to running in that transaction; its
future holds None when the claim was lost (another claimant moved the call first).
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future

from keel.store.protocols.agents import CallClaim, CallOutcome
from keel.store.protocols.audit import AuditDraft, AuditEntry, AuditStore

MAX_BATCH = 256

_Item = tuple[AuditDraft, bool, CallOutcome | None, CallClaim | None, "Future[AuditEntry | None]"]


class GroupCommit:
    def __init__(self, store: AuditStore) -> None:
        self._store = store
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.batches = 0  # transactions committed, for benchmarks

    def submit(
        self,
        draft: AuditDraft,
        *,
        durable: bool = True,
        outcome: CallOutcome | None = None,
        claim: CallClaim | None = None,
    ) -> Future[AuditEntry | None]:
        """The entry's future: its sealed entry once committed (flushed, unless `durable` is False), with
        `outcome` and `claim` in the same transaction (None: the claim was lost, nothing written); or the
        store's error."""
        done: Future[AuditEntry | None] = Future()
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="keel-audit-writer", daemon=True)
                self._thread.start()
            self._queue.put((draft, durable, outcome, claim, done))
        return done

    def close(self) -> None:
        """Commit what is queued, then stop the writer."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(30)

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            durable = any(d for _, d, _, _, _ in batch)
            outcomes = [o for _, _, o, _, _ in batch if o is not None]
            claims = [c for *_, c, _ in batch] if any(c for *_, c, _ in batch) else []
            try:
                entries = self._store.append_audits(
                    [e for e, *_ in batch], durable=durable, outcomes=outcomes, claims=claims
                )
            except Exception as exc:  # each caller hears its entry was not written
                for *_, f in batch:
                    f.set_exception(exc)
                continue
            self.batches += 1
            for (*_, f), entry in zip(batch, entries, strict=True):
                f.set_result(entry)
