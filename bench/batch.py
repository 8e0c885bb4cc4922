"""A batch of chat lines through `keel serve`, start to finish: the issue 13 target.

    python bench/batch.py                 # 10,000 lines, the target: completed in <= 30 s
    python bench/batch.py --lines 2000    # a quicker run
    python bench/batch.py --storage postgresql://user@127.0.0.1:5432/db   # a fresh schema in it, dropped after

Starts `keel serve` (SQLite in a temp dir, its embedded job workers, the simulated provider with no
latency), uploads a JSONL file of chat lines with the `openai` SDK, creates the batch and polls it
every 100 ms until it is `completed`. Reports the time from `batches.create` to `completed` (and
upload time apart), lines/s, the output file's lines, and — after SIGTERM drains the trace writer —
the trace rows tagged with the batch's id (one per line is the check). Noisy on a shared machine:
read it as indicative. Exit code 0 when the batch completed within the target with a trace per line.
"""

from __future__ import annotations

import argparse
import json
import secrets
import signal
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import openai

from served import free_port, serve

TARGET_S = 30.0


def start(tmp: Path, port: int, concurrency: int, storage: str) -> tuple[subprocess.Popen[bytes], str]:
    traces = {"blobs_url": f"file://{tmp / 'blobs'}"}
    return serve(tmp, port, storage=storage, traces=traces, batches={"concurrency": concurrency})


@contextmanager
def schema(base: str | None) -> Iterator[str | None]:
    """A fresh schema in the PostgreSQL at `base` (its URL with search_path set), dropped after; None: SQLite."""
    if base is None:
        yield None
        return
    import psycopg

    name = "keel_bench_" + secrets.token_hex(4)
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    try:
        yield f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{name}"
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {name} CASCADE")


def count_traced(storage: str, tmp: Path, batch_id: str) -> int:
    """Distinct custom_ids among the traces tagged with the batch's id."""
    if storage.startswith("sqlite:///"):
        with closing(sqlite3.connect(tmp / "k.db")) as db:
            sql = "SELECT COUNT(DISTINCT json_extract(tags, '$.custom_id')) FROM traces WHERE json_extract(tags, '$.batch_id') = ?"
            [(n,)] = db.execute(sql, (batch_id,)).fetchall()
        return int(n)
    import psycopg

    with psycopg.connect(storage) as pg:
        sql = "SELECT COUNT(DISTINCT tags->>'custom_id') FROM traces WHERE tags->>'batch_id' = %s"
        row = pg.execute(sql.encode(), (batch_id,)).fetchone()
    return int(row[0]) if row else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=64, help="batches.concurrency")
    ap.add_argument("--storage", help="a PostgreSQL URL (default: SQLite in a temp dir)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="keel-bench-batch-") as name, schema(args.storage) as pg:
        tmp = Path(name)
        port = free_port()
        storage = pg or f"sqlite:///{tmp / 'k.db'}"
        proc, key = start(tmp, port, args.concurrency, storage)
        try:
            c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0, timeout=60)
            lines = [
                {"custom_id": f"line-{i}", "method": "POST", "url": "/v1/chat/completions",
                 "body": {"model": "demo", "messages": [{"role": "user", "content": f"question {i}"}], "max_tokens": 32}}
                for i in range(args.lines)
            ]  # fmt: skip
            data = "".join(json.dumps(x) + "\n" for x in lines).encode()
            t0 = time.perf_counter()
            f = c.files.create(file=("bench.jsonl", data), purpose="batch")
            upload_s = time.perf_counter() - t0
            t1 = time.perf_counter()
            batch = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
            while batch.status not in ("completed", "failed", "expired", "cancelled"):
                time.sleep(0.1)
                batch = c.batches.retrieve(batch.id)
            run_s = time.perf_counter() - t1
            out = c.files.content(batch.output_file_id).text.splitlines() if batch.output_file_id else []
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        traced = count_traced(storage, tmp, batch.id)
    counts = batch.request_counts
    ok = batch.status == "completed" and run_s <= TARGET_S and traced == args.lines and len(out) == args.lines
    where = "PostgreSQL" if pg else "SQLite"
    print(f"batch of {args.lines} chat lines (simulated provider, {where}, batches.concurrency {args.concurrency})")
    print(f"  upload ({len(data) / 1e6:.1f} MB, every line checked): {upload_s:.2f} s")
    print(f"  create -> {batch.status}: {run_s:.2f} s ({args.lines / run_s:,.0f} lines/s); target <= {TARGET_S:g} s")
    assert counts is not None
    print(f"  request_counts: total {counts.total}, completed {counts.completed}, failed {counts.failed}")
    print(f"  output file lines: {len(out)}; lines traced (distinct custom_id tagged batch_id): {traced}")
    print("  PASS" if ok else "  MISS")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
