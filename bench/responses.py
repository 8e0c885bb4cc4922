"""What the Responses API edge adds over chat: `python bench/responses.py [--n 400]` from the repo root.

One gateway (tests/served.py's: uvicorn in a thread, SQLite, traces on) in front of the fake upstream
(0 ms), one keep-alive connection, sequential calls in alternating blocks of 50 per kind: chat
completions; `/v1/responses` with `store: false` (the codec only); with `store` (plus one INSERT in a
worker thread); and naming a `previous_response_id` (plus one recursive read; chains of 10). Prints
p50 and p99 per kind. Indicative only on a shared machine: compare the kinds of one run, not runs.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time
from typing import Any

import httpx

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from tests.conftest import base_config
from tests.served import serve

from keel.testing import FakeUpstream

BLOCK = 50


def percentile(xs: list[float], q: float) -> float:
    return sorted(xs)[int(q * (len(xs) - 1))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400, help="calls per kind (a multiple of 50)")
    args = parser.parse_args()
    one: Any = {"model": "gpt-4o-mini"}
    kinds: dict[str, tuple[str, Any]] = {
        "chat": ("/v1/chat/completions", one | {"messages": [{"role": "user", "content": "hi"}]}),
        "responses, store: false": ("/v1/responses", one | {"input": "hi", "store": False}),
        "responses, stored": ("/v1/responses", one | {"input": "hi"}),
        "responses, previous_response_id": ("/v1/responses", one | {"input": "more"}),
    }
    took: dict[str, list[float]] = {name: [] for name in kinds}
    with FakeUpstream() as up, tempfile.TemporaryDirectory() as d:
        tmp = pathlib.Path(d)
        raw = base_config(up, f"sqlite:///{tmp}/keel.db", tmp)
        with serve(raw, tmp) as gw, httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {gw.key}"}) as c:
            previous: str | None = None
            for n in range(30 * len(kinds) + args.n * len(kinds)):
                name = list(kinds)[(n // BLOCK) % len(kinds)]
                path, body = kinds[name]
                if name.endswith("previous_response_id") and previous:
                    body = body | {"previous_response_id": previous}
                t = time.perf_counter()
                r = c.post(path, json=body)
                elapsed = time.perf_counter() - t
                r.raise_for_status()
                if name.endswith("previous_response_id"):
                    previous = r.json()["id"] if n % 10 else None  # conversations of 10 turns
                if n >= 30 * len(kinds):  # after the warm-up
                    took[name].append(elapsed)
    for name, xs in took.items():
        print(f"{name:34s} p50 {percentile(xs, 0.5):6.2f} ms   p99 {percentile(xs, 0.99):6.2f} ms   (n={len(xs)})")


if __name__ == "__main__":
    main()
