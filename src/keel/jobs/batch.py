"""The OpenAI Batch API, run by Keel: one job per batch reads its input file, runs every line through
the gateway pipeline as the batch's creator, and writes the output and error files once.

States (the batch row): validating → in_progress → finalizing → completed; validating → failed (the
file does not fit the batch); cancelling → cancelled; expired past the completion window. A line runs
at `batches.priority` (below live traffic in a saturated target's queue), within the creator key's
limits and budgets, traced with tags `batch_id` and `custom_id`. A line refused for now (429 rate
limit or saturation, 503) waits its Retry-After and runs again; any other failure — a body that is
not a valid request, an unknown alias, a provider error after failover — is that line's answer, in
the error file under its custom_id. The batch itself fails only when its file cannot be used.

Once and only once: each line's answer is recorded keyed on (batch, custom_id), in chunks as they
come. A worker killed mid-batch loses at most the answers not yet recorded; the job's lease expires,
another worker resumes with the lines that have no record (they run again: execution is at least
once per line, recording exactly once), and the output files are assembled from the records at
finalize under ids derived from the batch id, so a finalize that runs twice writes the same files.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from keel.config.sections.batches import BatchesConfig
from keel.errors import InvalidRequest
from keel.gateway.pipeline import Handler
from keel.jobs.batchfile import BatchLine, blob_key, parse_lines
from keel.jobs.calls import Answer, Caller, resolve_key, run_body
from keel.jobs.errors import Permanent
from keel.store.protocols import BatchRow, BlobStore, FileRow, Job, JobContext, LineResult, Store
from keel.store.protocols.batches import FINAL_STATUSES

KIND = "openai.batch"
FLUSH_LINES = 256  # answers recorded per store write
FLUSH_S = 0.5  # ... or at least this often
WINDOWS = {"24h": 86400.0}


def output_line(batch_id: str, custom_id: str, answer: Answer) -> str:
    """OpenAI's batch output line: {id, custom_id, response: {status_code, request_id, body}, error}."""
    error = None
    if not answer.ok:
        e = answer.body.get("error") or {}
        error = {"code": e.get("code") or e.get("type"), "message": e.get("message")}
    line = {
        "id": f"batch_req_{answer.trace_id}",
        "custom_id": custom_id,
        "response": {"status_code": answer.status, "request_id": answer.trace_id, "body": answer.body},
        "error": error,
    }
    return orjson.dumps(line).decode()


def file_ids(batch_id: str) -> tuple[str, str]:
    """The output and error files' ids: fixed per batch, so finalizing twice writes the same two files."""
    stem = batch_id.removeprefix("batch_")
    return f"file-{stem}out", f"file-{stem}err"


@dataclass
class _Run:
    batch: BatchRow
    ctx: JobContext
    caller: Caller
    pending: list[LineResult]
    done: int
    flushed_at: float
    stop: bool = False


class BatchRunner:
    """The `openai.batch` job handler."""

    def __init__(
        self, store: Store, blobs: BlobStore, pipeline: Callable[[], Handler], config: BatchesConfig, payloads: bool
    ) -> None:
        self._store = store
        self._blobs = blobs
        self._pipeline = pipeline
        self._cfg = config
        self._payloads = payloads

    async def __call__(self, job: Job, ctx: JobContext) -> Any:
        batch_id = job.payload["batch_id"]
        batch = await asyncio.to_thread(self._store.get_batch, None, batch_id)
        if batch is None:
            raise Permanent(f"batch {batch_id} is gone")
        if batch.status in FINAL_STATUSES:
            return {"status": batch.status}
        if batch.status in ("validating", "in_progress"):
            lines = await self._validate(batch)  # again after a crash: the file may be gone since
            if lines is None:
                return {"status": "failed"}
            if batch.status == "validating":
                changes = {"status": "in_progress", "in_progress_at": time.time()}
                batch = await self._update(batch, changes, ("validating",))
            if batch.status == "in_progress":
                batch = await self._run(batch, ctx, lines)
        final = await self._finalize(batch)
        return {"status": final.status, "completed": final.completed, "failed": final.failed}

    # ---- validating ------------------------------------------------------------------------------

    async def _validate(self, batch: BatchRow) -> list[BatchLine] | None:
        """The input lines, or None after failing the batch (with errors naming the lines)."""
        try:
            lines = await self._lines(batch)
        except InvalidRequest as err:
            await self._fail(
                batch, [{"code": "invalid_file", "message": err.message, "param": err.param, "line": None}]
            )
            return None
        wrong = [ln for ln in lines if ln.url != batch.endpoint]
        if wrong:
            errors = [
                {"code": "mismatched_endpoint", "message": f"url {ln.url} is not the batch's {batch.endpoint}",
                 "param": "url", "line": ln.line}
                for ln in wrong[:100]
            ]  # fmt: skip
            await self._fail(batch, errors)
            return None
        if batch.total != len(lines):
            await self._update(batch, {"total": len(lines)}, None)
        return lines

    async def _lines(self, batch: BatchRow) -> list[BatchLine]:
        row = await asyncio.to_thread(self._store.get_file, batch.tenant, batch.input_file_id)
        data = None if row is None else await asyncio.to_thread(self._blobs.get, row.blob_key)
        if data is None:
            raise InvalidRequest(f"The input file '{batch.input_file_id}' is gone.", "input_file_id")
        return parse_lines(data, self._cfg.max_lines)

    async def _fail(self, batch: BatchRow, errors: list[dict[str, Any]]) -> None:
        await self._update(batch, {"status": "failed", "failed_at": time.time(), "errors": errors}, None)

    # ---- in progress -----------------------------------------------------------------------------

    async def _run(self, batch: BatchRow, ctx: JobContext, lines: Sequence[BatchLine]) -> BatchRow:
        recorded = await asyncio.to_thread(self._store.recorded_ids, batch.id)
        todo = [ln for ln in lines if ln.custom_id not in recorded]
        resolved = await asyncio.to_thread(resolve_key, self._store, batch.tenant, batch.key_id)
        if resolved is None:
            await self._fail(batch, [{"code": "key_revoked", "message": "The batch's API key was revoked.",
                                      "param": None, "line": None}])  # fmt: skip
            return await self._current(batch)
        principal, allowed = resolved
        caller = Caller(principal, allowed, priority=self._cfg.priority, timeout_s=self._cfg.line_timeout_s)
        run = _Run(batch, ctx, caller, [], len(recorded), time.monotonic())
        if todo and time.time() < batch.expires_at:
            await self._lines_in_flight(run, todo, len(lines))
        await self._flush(run, len(lines))
        return await self._current(batch)

    async def _lines_in_flight(self, run: _Run, todo: Sequence[BatchLine], total: int) -> None:
        queue = iter(todo)
        pipeline = self._pipeline()

        async def worker() -> None:
            for line in queue:
                if run.stop:
                    return
                answer = await self._line(pipeline, run, line)
                if answer is None:
                    return
                run.pending.append(LineResult(run.batch.id, line.custom_id, line.line, answer.ok,
                                              output_line(run.batch.id, line.custom_id, answer)))  # fmt: skip
                if len(run.pending) >= FLUSH_LINES or time.monotonic() - run.flushed_at >= FLUSH_S:
                    await self._flush(run, total)

        workers = [asyncio.create_task(worker()) for _ in range(min(self._cfg.concurrency, len(todo)))]
        try:
            await asyncio.gather(*workers)
        finally:
            for w in workers:
                w.cancel()

    async def _line(self, pipeline: Handler, run: _Run, line: BatchLine) -> Answer | None:
        """One line's answer; refused for now, it waits and runs again. None: the batch is stopping."""
        tags = {"batch_id": run.batch.id, "custom_id": line.custom_id}
        while True:
            answer = await run_body(pipeline, line.url, line.body, run.caller, tags=tags, store_payloads=self._payloads)
            if answer.retry_after is None:
                return answer
            if time.time() >= run.batch.expires_at:
                return answer
            await asyncio.sleep(min(max(answer.retry_after, 0.05), 30.0))
            if run.stop:
                return None

    async def _flush(self, run: _Run, total: int) -> None:
        """Record the answers gathered; report progress (renewing the lease); see a cancel or the window end."""
        pending, run.pending = run.pending, []
        run.flushed_at = time.monotonic()
        if pending:
            await asyncio.to_thread(self._store.record_results, pending)
            run.done += len(pending)
            ok, failed = await asyncio.to_thread(self._store.count_results, run.batch.id)
            await asyncio.to_thread(self._store.update_batch, run.batch.id, {"completed": ok, "failed": failed})
        await run.ctx.progress(run.done, total, f"{run.done} of {total} lines")
        if run.ctx.cancelled:  # an operator cancelled the job: the batch ends cancelled
            changes = {"status": "cancelling", "cancelling_at": time.time()}
            await asyncio.to_thread(self._store.update_batch, run.batch.id, changes, when=("in_progress",))
            run.stop = True
        elif time.time() >= run.batch.expires_at:
            run.stop = True
        elif not run.stop:
            now = await asyncio.to_thread(self._store.get_batch, None, run.batch.id)
            run.stop = now is None or now.status != "in_progress"

    # ---- finalizing ------------------------------------------------------------------------------

    async def _finalize(self, batch: BatchRow) -> BatchRow:
        """Write the output and error files from the records (once: fixed ids), then the final state:
        cancelled if cancelling, expired if lines are left unanswered (the window ended), else completed."""
        if batch.status == "in_progress":
            batch = await self._update(batch, {"status": "finalizing", "finalizing_at": time.time()}, ("in_progress",))
        if batch.status not in ("finalizing", "cancelling"):
            return batch
        results = await asyncio.to_thread(self._store.batch_results, batch.id)
        out_id, err_id = file_ids(batch.id)
        ok = [r.text for r in results if r.ok]
        bad = [r.text for r in results if not r.ok]
        ending = (
            "cancelled" if batch.status == "cancelling" else "expired" if len(results) < batch.total else "completed"
        )
        output = await self._write(batch, out_id, "batch_output.jsonl", ok)
        errors = await self._write(batch, err_id, "batch_errors.jsonl", bad)
        stamp = {"completed": "completed_at", "expired": "expired_at", "cancelled": "cancelled_at"}[ending]
        changes = {
            "status": ending, stamp: time.time(), "output_file_id": output, "error_file_id": errors,
            "completed": len(ok), "failed": len(bad),
        }  # fmt: skip
        return await self._update(batch, changes, ("finalizing", "cancelling"))

    async def _write(self, batch: BatchRow, file_id: str, name: str, lines: list[str]) -> str | None:
        if not lines:
            return None
        existing = await asyncio.to_thread(self._store.get_file, batch.tenant, file_id)
        if existing is not None:
            return file_id
        data = ("\n".join(lines) + "\n").encode()
        key = blob_key(batch.tenant, file_id)
        await asyncio.to_thread(self._blobs.put, key, data)
        row = FileRow(file_id, batch.tenant, name, "batch_output", len(data), time.time(), key, len(lines))
        await asyncio.to_thread(self._store.put_file, row)
        return file_id

    async def _update(self, batch: BatchRow, changes: dict[str, Any], when: Sequence[str] | None) -> BatchRow:
        moved = await asyncio.to_thread(self._store.update_batch, batch.id, changes, when=when)
        return moved if moved is not None else await self._current(batch)

    async def _current(self, batch: BatchRow) -> BatchRow:
        now = await asyncio.to_thread(self._store.get_batch, None, batch.id)
        if now is None:
            raise Permanent(f"batch {batch.id} is gone")
        return now
