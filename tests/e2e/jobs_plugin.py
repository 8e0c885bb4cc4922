"""A test capability loaded by `keel worker` through `jobs.plugins`: job kinds whose effect is an
idempotent write keyed on the job id, into an SQLite file the payload names.

`test.effect`: record the attempt, write the effect (INSERT OR IGNORE on the job id), then, on the
first attempt when `hang_after_effect`, hang (the test kills the worker here: the effect exists, the
job is not finished). `test.sleep`: record the attempt, sleep `seconds`, write the effect.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from typing import Any

from keel.gateway.capability import Context, Contribution
from keel.store.protocols import Job, JobContext

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS effects (job_id TEXT PRIMARY KEY, pid INTEGER);"
    "CREATE TABLE IF NOT EXISTS attempts (job_id TEXT, attempt INTEGER, pid INTEGER, at REAL DEFAULT (julianday('now')))"
)


def _write(path: str, sql: str, params: tuple[Any, ...]) -> None:
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        conn.executescript(SCHEMA)
        conn.execute(sql, params)
    finally:
        conn.close()


def attempt(job: Job) -> None:
    _write(
        job.payload["db"],
        "INSERT INTO attempts (job_id, attempt, pid) VALUES (?, ?, ?)",
        (job.id, job.attempts, os.getpid()),
    )


def effect(job: Job) -> None:
    _write(job.payload["db"], "INSERT OR IGNORE INTO effects (job_id, pid) VALUES (?, ?)", (job.id, os.getpid()))


async def handle_effect(job: Job, ctx: JobContext) -> Any:
    await asyncio.to_thread(attempt, job)
    await asyncio.to_thread(effect, job)
    if job.payload.get("hang_after_effect") and job.attempts == 1:
        await asyncio.sleep(3600)
    return {"pid": os.getpid()}


async def handle_sleep(job: Job, ctx: JobContext) -> Any:
    await asyncio.to_thread(attempt, job)
    await asyncio.sleep(float(job.payload["seconds"]))
    await asyncio.to_thread(effect, job)
    return {"pid": os.getpid()}


def build(ctx: Context) -> Contribution:
    return Contribution(jobs={"test.effect": handle_effect, "test.sleep": handle_sleep})
