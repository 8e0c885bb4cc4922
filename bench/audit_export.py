"""Audit range export: throughput and memory of a streamed export, and the offline verification of the file.

    PYTHONPATH=src python bench/audit_export.py [--entries 50000]

Fills a SQLite audit chain (bulk, one transaction per entry as in production), exports one day's range
as JSONL and CSV through `keel.audit.export` (the pages the API streams), verifies the JSONL alone, and
prints entries/s and the peak Python memory of each (tracemalloc): bounded by a page, not the range.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from keel.audit.export import AuditQuery, export, read_jsonl, verify_file
from keel.audit.log import AuditLog
from keel.store.open import open_store

T0 = 1_780_000_000.0


def measured(what: str, n: int, work: Callable[[], object]) -> object:
    tracemalloc.start()
    started = time.perf_counter()
    out = work()
    took = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"  {what:<28} {n / took:>10,.0f} entries/s   {took:6.2f} s   peak {peak / 2**20:6.1f} MiB")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=50_000)
    n = ap.parse_args().entries
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{tmp}/bench.db")
        log = AuditLog(store)
        detail = {"route": "/api/keys", "body": {"name": "ci", "models": ["gpt-4o-mini"], "note": "x" * 200}}
        started = time.perf_counter()
        for i in range(n):
            log.append("user:u1", "keys.write POST /api/keys", f"k{i}", tenant="acme", arguments=detail, now=T0 + i)
        print(f"audit export bench: {n:,} entries appended in {time.perf_counter() - started:.1f} s (SQLite)")
        query = AuditQuery(since=T0, until=T0 + n)
        path = Path(tmp) / "day.jsonl"

        def to_file() -> None:
            with path.open("wb") as f:
                for chunk in export(store, query, "jsonl"):
                    f.write(chunk)

        def to_csv() -> None:
            sink = io.BytesIO()
            for chunk in export(store, query, "csv"):
                sink.write(chunk)
                sink.seek(0)
                sink.truncate()  # a socket: the bytes leave, memory does not grow

        measured("export JSONL (to a file)", n, to_file)
        measured("export CSV (streamed)", n, to_csv)

        def check() -> object:
            with path.open("rb") as f:
                return verify_file(read_jsonl(f))

        verdict = measured("verify the file offline", n, check)
        print(f"  file {path.stat().st_size / 2**20:.1f} MiB; verdict ok={getattr(verdict, 'ok', None)}")
        store.close()


if __name__ == "__main__":
    main()
