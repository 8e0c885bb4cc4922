"""Eval runs: creating one (the suite pinned as it will run) and the `eval.run` job that runs it.

A run's spec holds the suite document with its dataset tests expanded, so resuming and re-reading a run
score exactly what it was created with. The job scores every (item, repeat) that has no recorded result,
`concurrency` at a time, and records results in chunks: a worker killed mid-run loses at most the results
not yet recorded, and the job's next attempt (after its lease expires) runs only the pairs left — at least
once per pair, recorded exactly once. The run ends `finished` with its summary, or `failed` with why.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from keel.evals.assertions import Embed, InvalidSuite, Scoring, Verdict, check, grade
from keel.evals.calls import CallFailed, GatewayCalls
from keel.evals.gate import summarize
from keel.evals.suite import Item, Suite, dataset_tests, parse_suite
from keel.gateway.pipeline import Handler
from keel.jobs.calls import Caller, resolve_key
from keel.jobs.errors import Permanent
from keel.jobs.queue import JobQueue
from keel.store.protocols import EvalResult, EvalRun, Job, JobContext, Store
from keel.traces.ids import new_trace_id

KIND = "eval.run"
FLUSH_RESULTS = 32  # results recorded per store write
FLUSH_S = 0.2  # ... or at least this often: a crash re-runs at most what was scored since
MAX_REPEAT = 100
MAX_CONCURRENCY = 64
RUN_TIMEOUT_S = 24 * 3600.0
MAX_OUTPUT = 20_000  # characters of an output kept per result


@dataclass(frozen=True, slots=True)
class Options:
    repeat: int = 1
    concurrency: int = 4
    label: str | None = None
    name: str | None = None
    cache: bool = False  # let the aliases' response cache answer (default: skip it, fresh answers)


def resolve_datasets(store: Store, tenant: str, doc: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The suite document with `tests: dataset:NAME[@VERSION]` replaced by the dataset's items; the
    pinned dataset ({name, version}) or {}."""
    tests = doc.get("tests")
    if not (isinstance(tests, str) and tests.startswith("dataset:")):
        return dict(doc), {}
    name, _, version = tests[len("dataset:") :].partition("@")
    if version and not version.isdigit():
        raise InvalidSuite("dataset:NAME[@VERSION] takes a version number", "tests")
    found = store.get_dataset(tenant, name, int(version) if version else None)
    if found is None:
        raise InvalidSuite(
            f"no dataset {name!r}{f' version {version}' if version else ''} in tenant {tenant!r}", "tests"
        )
    items = store.dataset_items(tenant, name, found.version)
    return {**doc, "tests": dataset_tests(items)}, {"name": name, "version": found.version}


async def create_run(
    store: Store,
    queue: JobQueue,
    tenant: str,
    key_id: str,
    doc: Mapping[str, Any],
    options: Options,
    python_modules: Sequence[str] = (),
) -> EvalRun:
    """Check the suite (InvalidSuite names what is wrong), store the run, queue its job."""
    if not 1 <= options.repeat <= MAX_REPEAT:
        raise InvalidSuite(f"repeat is 1..{MAX_REPEAT}", "repeat")
    if not 1 <= options.concurrency <= MAX_CONCURRENCY:
        raise InvalidSuite(f"concurrency is 1..{MAX_CONCURRENCY}", "concurrency")
    expanded, dataset = await asyncio.to_thread(resolve_datasets, store, tenant, doc)
    suite = parse_suite(expanded, options.name or "suite", python_modules)
    items = suite.items()
    run_id = "evr_" + new_trace_id()
    spec = {
        "suite": expanded, "repeat": options.repeat, "concurrency": options.concurrency, "dataset": dataset,
        "cache": options.cache,
    }  # fmt: skip
    run = EvalRun(
        id=run_id, tenant=tenant, key_id=key_id, suite=options.name or suite.name, label=options.label,
        status="queued", spec=spec, total=len(items) * options.repeat, done=0, created_at=time.time(),
    )  # fmt: skip
    await asyncio.to_thread(store.create_eval_run, run)
    job = await queue.enqueue(
        KIND, {"run_id": run_id}, tenant=tenant, idempotency_key=f"eval:{run_id}", timeout_s=RUN_TIMEOUT_S
    )
    updated = await asyncio.to_thread(store.update_eval_run, run_id, {"job_id": job.id})
    return updated or run


@dataclass
class _Progress:
    run: EvalRun
    ctx: JobContext
    pending: list[EvalResult] = field(default_factory=list)
    done: int = 0
    flushed_at: float = field(default_factory=time.monotonic)


class EvalRunner:
    """The `eval.run` job handler."""

    def __init__(
        self,
        store: Store,
        pipeline: Callable[[], Handler],
        embed: Callable[[], Embed | None],
        payloads: bool,
        python_modules: Sequence[str] = (),
    ) -> None:
        self._python = tuple(python_modules)
        self._store = store
        self._pipeline = pipeline
        self._embed = embed
        self._payloads = payloads

    async def __call__(self, job: Job, ctx: JobContext) -> Any:
        run = await asyncio.to_thread(self._store.get_eval_run, None, job.payload["run_id"])
        if run is None:
            raise Permanent(f"eval run {job.payload['run_id']} is gone")
        if run.status in ("finished", "failed", "cancelled"):
            return {"status": run.status}
        try:
            suite = parse_suite(run.spec["suite"], run.suite, self._python)
        except InvalidSuite as err:  # e.g. a python scorer this worker cannot import
            return await self._end(run, "failed", error=str(err))
        resolved = await asyncio.to_thread(resolve_key, self._store, run.tenant, run.key_id)
        if resolved is None:
            return await self._end(run, "failed", error="the run's API key was revoked")
        caller = Caller(resolved[0], resolved[1], feature="eval")
        cache = bool(run.spec.get("cache", False))
        calls = GatewayCalls(self._pipeline(), caller, run.id, store_payloads=self._payloads, cache=cache)
        await asyncio.to_thread(self._store.update_eval_run, run.id, {"status": "running"})
        await self._score_all(run, suite, calls, ctx)
        if ctx.cancelled:
            return await self._end(run, "cancelled")
        return await self._end(run, "finished")

    async def _score_all(self, run: EvalRun, suite: Suite, calls: GatewayCalls, ctx: JobContext) -> None:
        recorded = await asyncio.to_thread(self._store.recorded_eval_keys, run.id)
        repeat = int(run.spec.get("repeat", 1))
        todo = [(it, r) for it in suite.items() for r in range(repeat) if (it.key, r) not in recorded]
        progress = _Progress(run, ctx, done=len(recorded))
        embed = (
            await asyncio.to_thread(self._embed)  # the first use loads the model: seconds, off the event loop
            if any(a.kind in ("similar", "answer-relevance") for t in suite.tests for a in t.asserts)
            else None
        )
        pairs = iter(todo)

        async def worker() -> None:
            for item, rep in pairs:
                if ctx.cancelled:
                    return
                result = await self._score(run, item, rep, calls, embed)
                progress.pending.append(result)  # after the await: a flush meanwhile swaps the list
                if len(progress.pending) >= FLUSH_RESULTS or time.monotonic() - progress.flushed_at >= FLUSH_S:
                    await self._flush(progress)

        workers = [asyncio.create_task(worker()) for _ in range(min(int(run.spec.get("concurrency", 4)), len(todo)))]
        try:
            await asyncio.gather(*workers)
        finally:
            for w in workers:
                w.cancel()
        await self._flush(progress)

    async def _score(self, run: EvalRun, item: Item, rep: int, calls: GatewayCalls, embed: Embed | None) -> EvalResult:
        tags = {"eval_item": item.key}
        try:
            output = await calls.chat(item.body(), tags)
        except CallFailed as err:
            return EvalResult(
                run.id, item.key, rep, False, 0.0, "", err.trace_id, 0.0, 0.0, (), f"HTTP {err.status}: {err}"
            )
        scoring = Scoring(
            vars=item.test.vars, expected=item.test.expected, context=item.test.context,
            judge=calls.judge(item.key), embed=embed, grader=item.test.grader, tools=item.provider.tools,
        )  # fmt: skip
        verdicts = [await check(a, output, scoring) for a in item.test.asserts]
        passed, score = grade(verdicts, item.test.threshold)
        return EvalResult(
            run.id, item.key, rep, passed, score, output.text[:MAX_OUTPUT], output.trace_id, output.latency_ms,
            output.cost_usd, tuple(_verdict_json(v) for v in verdicts),
            None if not any(v.error for v in verdicts) else "; ".join(v.error or "" for v in verdicts if v.error),
        )  # fmt: skip

    async def _flush(self, p: _Progress) -> None:
        pending, p.pending = p.pending, []
        p.flushed_at = time.monotonic()
        if pending:
            await asyncio.to_thread(self._store.record_eval_results, pending)
            p.done += len(pending)
            await asyncio.to_thread(self._store.update_eval_run, p.run.id, {"done": p.done})
        await p.ctx.progress(p.done, p.run.total, f"{p.done} of {p.run.total} results")

    async def _end(self, run: EvalRun, status: str, error: str | None = None) -> dict[str, Any]:
        results = await asyncio.to_thread(self._store.eval_results, run.id)
        summary = summarize(results)
        changes = {
            "status": status,
            "finished_at": time.time(),
            "summary": summary,
            "error": error,
            "done": len(results),
        }
        await asyncio.to_thread(self._store.update_eval_run, run.id, changes)
        return {"status": status, "pass_rate": summary["pass_rate"], "results": len(results)}


def _verdict_json(v: Verdict) -> dict[str, Any]:
    out: dict[str, Any] = {"type": v.type, "passed": v.passed, "score": v.score, "reason": v.reason, "weight": v.weight}
    if v.metric:
        out["metric"] = v.metric
    if v.error:
        out["error"] = v.error
    return out
