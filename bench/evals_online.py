"""The request-path CPU of online evals: a 10% rule against none, side by side.

`python bench/evals_online.py [--calls 4000] [--rounds 5]`

Two figures:
- the sampler alone: `OnlineSampler.select` on a finished call (what the trace slot adds when the call
  ends), with no rule, a 10% rule whose filter matches, and a 10% rule whose filter does not;
- the whole in-process pipeline (auth → route → … → the simulated provider → trace record), run through
  `keel.jobs.calls.run_body` as a job would, measuring the event loop thread's CPU per call
  (`time.thread_time`), rounds alternating no rule / 10% rule. Scoring jobs are not run here
  (`jobs.enabled: false`): they are off the request path by design; the selections still become jobs.
A figure on a shared 2-core machine is indicative only; the alternation keeps the comparison fair.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from keel.config import parse
from keel.evals.online import OnlineSampler, RuleBook, Selections
from keel.evals.online_builder import OnlineEvals
from keel.gateway.call import Call, Outcome
from keel.jobs.calls import CHAT, Caller, run_body
from keel.runtime.components import Runtime
from keel.store.protocols import OnlineRule
from keel.traces.ids import new_trace_id
from keel.types import ChatRequest, ChatResponse, Message, Principal, RoutePlan, TraceRecord

RULE = OnlineRule("ten", 0.1, ({"type": "is-json"},), feature="support")
ELSEWHERE = OnlineRule("elsewhere", 0.1, ({"type": "is-json"},), feature="billing")


def sampler_alone(n: int) -> dict[str, float]:
    """µs of CPU per `select` call, for each rule set."""
    out = {}
    request = ChatRequest(model="sim", messages=(Message("user", "hi"),))
    response = ChatResponse("r", "sim", "hello", (), "stop", None)
    outcome = Outcome("ok", None, response, None, 0.01, 0.01)
    principal = Principal("t1", "k1")
    plan = RoutePlan("sim", (), "default")
    for label, rules in (
        ("no rule", ()),
        ("10% rule, filter matches", (RULE,)),
        ("10% rule, other feature", (ELSEWHERE,)),
    ):
        book = RuleBook(None)  # type: ignore[arg-type]  # rules set by hand: no store read
        book.rules = rules
        selections = Selections(None, max_pending=n + 1, batch_size=50)
        sampler = OnlineSampler(book, selections)
        calls = [
            Call(request, TraceRecord(new_trace_id(), time.time()), principal=principal, feature="support", plan=plan)
            for _ in range(n)
        ]
        start = time.thread_time()
        for call in calls:
            sampler.select(call, outcome)
        out[label] = (time.thread_time() - start) / n * 1e6
        if rules == (RULE,):
            print(f"  picked {selections.stats.selected} of {n} ({selections.stats.selected / n:.2%})")
    return out


async def pipeline(calls: int, rounds: int, tmp: Path) -> dict[str, list[float]]:
    raw = {
        "storage": {"url": f"sqlite:///{tmp}/bench.db"},
        "traces": {"spill_dir": str(tmp / "spill")},
        "jobs": {"enabled": False},
        "providers": {"sim": {"type": "simulated", "latency_ms": 0, "ttft_ms": 0}},
        "models": {"sim": {"targets": [{"provider": "sim", "model": "simulated-1"}]}},
        "metrics": {"enabled": False},
    }
    runtime = Runtime.build(parse(raw, env={}))
    await runtime.start()
    online = runtime.get(OnlineEvals)
    caller = Caller(Principal("t1", "k1"), feature="support")
    body = {"model": "sim", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    figures: dict[str, list[float]] = {"no rule": [], "10% rule": []}
    try:
        for _ in range(200):  # warm-up
            await run_body(runtime.pipeline, CHAT, body, caller)
        for _ in range(rounds):
            for label, rules in (("no rule", ()), ("10% rule", (RULE,))):
                online.book.rules = rules
                start = time.thread_time()
                for _ in range(calls):
                    answer = await run_body(runtime.pipeline, CHAT, body, caller)
                    assert answer.status == 200, answer.body
                figures[label].append((time.thread_time() - start) / calls * 1e6)
        print(f"  selected {online.selections.stats.selected} calls in the 10% rounds ({rounds * calls} calls)")
    finally:
        await runtime.aclose()
    return figures


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--calls", type=int, default=4000, help="calls per round")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    print("sampler alone (OnlineSampler.select, µs CPU per finished call):")
    for label, us in sampler_alone(100_000).items():
        print(f"  {label:<28} {us:7.3f} µs")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    with tempfile.TemporaryDirectory() as tmp:
        figures = asyncio.run(pipeline(args.calls, args.rounds, Path(tmp)))
    print(f"in-process pipeline, event-loop CPU per call (median of {args.rounds} alternating rounds):")
    for label, values in figures.items():
        print(f"  {label:<10} {statistics.median(values):8.1f} µs   rounds: {', '.join(f'{v:.1f}' for v in values)}")
    delta = statistics.median(figures["10% rule"]) - statistics.median(figures["no rule"])
    print(f"  difference {delta:+.1f} µs per call (noise of this machine included)")


if __name__ == "__main__":
    main()
