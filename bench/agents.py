"""Per-tool-call overhead of the agent runtime's policy and audit: schema validation + policy decision
(in memory), and one audit append (a transaction on the store), on SQLite and, when reachable, PostgreSQL.

    PYTHONPATH=src python bench/agents.py [--calls 500] [--postgres postgresql://127.0.0.1/test]

Target (issue 18): policy and audit overhead per tool call <= 1 ms. Prints p50/p90 per part.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from keel.agents.loop import _invalid
from keel.agents.policy import decide
from keel.agents.tools import parse_spec
from keel.audit.log import AuditLog
from keel.store.open import open_store

SPEC = parse_spec({
    "name": "pay", "kind": "http", "http": {"url": "http://127.0.0.1/pay"},
    "parameters": {"type": "object", "properties": {"amount": {"type": "number"}, "to": {"type": "string"}},
                   "required": ["amount", "to"]},
    "policy": {"default": "allow", "rules": [{"when": "amount > 100", "action": "approve"},
                                             {"when": "to in [\"mallory\"]", "action": "deny"}]},
})  # fmt: skip
ARGS = {"amount": 42.5, "to": "acme", "memo": "invoice 7", "api_key": "sk-hidden"}


def show(name: str, xs: list[float]) -> float:
    q = statistics.quantiles(xs, n=10)
    p50 = statistics.median(xs)
    print(f"{name:<44} p50 {p50 * 1000:7.3f} ms  p90 {q[8] * 1000:7.3f} ms")
    return p50


def bench_policy(n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        assert _invalid(SPEC, ARGS) is None
        assert decide(SPEC, ARGS) == "allow"
        times.append(time.perf_counter() - t)
    return show("schema validation + policy decision", times)


def bench_audit(url: str, name: str, n: int) -> float:
    store = open_store(url)
    log = AuditLog(store)
    times = []
    try:
        for i in range(n):
            t = time.perf_counter()
            log.append("key:k1", "tool.run", "pay", tenant="t1", arguments=ARGS, result={"ok": True, "call": str(i)})
            times.append(time.perf_counter() - t)
        assert log.verify().ok
    finally:
        store.close()
    return show(f"audit append ({name})", times)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--calls", type=int, default=500)
    p.add_argument("--postgres", help="a PostgreSQL URL (a fresh schema is NOT made: use a scratch database)")
    a = p.parse_args()
    policy = bench_policy(a.calls)
    with tempfile.TemporaryDirectory() as d:
        audit = bench_audit(f"sqlite:///{d}/bench.db", "SQLite, WAL", a.calls)
    if a.postgres:
        audit = max(audit, bench_audit(a.postgres, "PostgreSQL", a.calls))
    total = policy + audit
    print(
        f"policy + audit per tool call, p50: {total * 1000:.3f} ms (target <= 1 ms: {'met' if total <= 0.001 else 'MISSED'})"
    )
    return 0 if total <= 0.001 else 1


if __name__ == "__main__":
    raise SystemExit(main())
