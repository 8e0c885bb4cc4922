"""What naming a prompt costs the request path: `python bench/prompts.py [--n 20000] [--repeats 5]`.

The issue's bar: a call by prompt adds ≤ 0.05 ms CPU over the same call sent with its messages. This
times, in one process, the part of the path that differs: the edge's parse of the body (the
`prompt` object or the messages) plus, for the prompt, the prompt slot's work (resolve the label in
memory, check the variables, render, parse the rendered messages, merge the parameters, annotate the
trace) — the rest of the pipeline is the same for both. CPU is `time.process_time()` per call; each
figure is the median of --repeats runs of --n calls. Two versions: plain (3 variables, 2 messages)
and with a variables JSON schema (validated per call with jsonschema). Not a replacement for
bench/run.py side by side over HTTP, which has no mode for extra body fields yet.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from keel.gateway.call import Call, Reply, no_events
from keel.prompts.book import PromptBook
from keel.prompts.content import content_hash
from keel.prompts.stage import PromptStage
from keel.store.protocols import PromptContent, PromptLabel, PromptVersion
from keel.types import Principal, TraceRecord
from keel.wire.openai_chat import parse_request

MESSAGES = [
    {"role": "system", "content": "You help {{ customer }} with {{ product }}. Be brief and exact."},
    {"role": "user", "content": "Question: {{ question }}"},
]
VARS = {"customer": "Ada", "product": "Keel", "question": "How do labels move?"}
SCHEMA = {"type": "object", "properties": {k: {"type": "string"} for k in VARS}, "required": list(VARS)}


def book(schema: dict[str, Any] | None) -> PromptBook:
    content = PromptContent(tuple(MESSAGES), schema, "gpt-4o-mini", {"temperature": 0.2, "max_tokens": 50})
    version = PromptVersion("t1", "support", 1, content_hash(content), content, None, None, 0.0)
    b = PromptBook()
    b.update([version], [PromptLabel("t1", "support", "production", 1, False, 0.0, None)])
    return b


async def _next(call: Call) -> Reply:
    return Reply(no_events(), call.t0)


def per_call_ms(n: int, body: dict[str, Any], stage: PromptStage | None) -> float:
    principal = Principal("t1", "k1")

    async def run() -> float:
        started = time.process_time()
        for _ in range(n):
            call = Call(parse_request(body), TraceRecord(id="t", started_at=0.0), principal=principal)
            if stage is not None:
                await stage(call, _next)
        return (time.process_time() - started) * 1000 / n

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rendered = [
        {"role": "system", "content": "You help Ada with Keel. Be brief and exact."},
        {"role": "user", "content": "Question: How do labels move?"},
    ]
    by_messages = {"model": "gpt-4o-mini", "messages": rendered, "temperature": 0.2, "max_tokens": 50}
    by_prompt = {"model": "prompt", "prompt": {"id": "support", "label": "production", "variables": VARS}}
    rows = []
    for name, schema in (("plain", None), ("with schema", SCHEMA)):
        stage = PromptStage(book(schema))
        base = statistics.median(per_call_ms(args.n, by_messages, None) for _ in range(args.repeats))
        prompted = statistics.median(per_call_ms(args.n, by_prompt, stage) for _ in range(args.repeats))
        rows.append((name, base, prompted))
    print(f"n={args.n} repeats={args.repeats} (CPU ms per call, median; noisy shared machine: indicative)")
    print(f"{'version':<12} {'messages':>9} {'prompt':>9} {'added':>9}  bar 0.050")
    for name, base, prompted in rows:
        print(f"{name:<12} {base:9.4f} {prompted:9.4f} {prompted - base:9.4f}")


if __name__ == "__main__":
    main()
