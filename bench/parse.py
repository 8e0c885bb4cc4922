"""Edge validation cost: `python bench/parse.py [--calls 200000]`.

Times `parse_request` (OpenAI chat and Anthropic Messages bodies, already decoded, as the edge holds
them) and the tag parsing of `new_call`, on a small body and on a rich one (content parts, tool
calls, a tool result, a tool, metadata). Prints µs per call (the best of 5 runs: the machine is
shared, so take differences below ~0.3 µs as noise; for exact figures count instructions, e.g.
`valgrind --tool=callgrind python bench/parse.py --calls 2000`). Every field check added to the
edge must stay within the request path's budget of 0.03 ms for all fixes.
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable
from typing import Any

from keel.wire import anthropic_request, openai_chat

SMALL = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello."}],
    "max_tokens": 64,
    "temperature": 0.2,
}
RICH = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\": 1}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
        {"role": "user", "content": "thanks", "name": "bob"},
    ],
    "tools": [{"type": "function", "function": {"name": "lookup", "description": "d", "parameters": {"type": "object"}}}],
    "metadata": {"team": "ml"},
    "n": 1,
}  # fmt: skip
MESSAGES = {
    "model": "claude",
    "max_tokens": 64,
    "system": "You are terse.",
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "42"}]},
    ],
    "tools": [{"name": "f", "input_schema": {"type": "object"}}],
    "metadata": {"user_id": "u1"},
}  # fmt: skip


def _tags() -> Callable[[], Any] | None:
    try:
        from keel.api.openai import _tags as tags
    except ImportError:
        return None
    return lambda: tags("team=ml,exp=a,run=42", {"owner": "ana"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    n = parser.parse_args().calls
    cases: dict[str, Callable[[], Any] | None] = {
        "openai parse_request, small body": lambda: openai_chat.parse_request(SMALL),
        "openai parse_request, rich body": lambda: openai_chat.parse_request(RICH),
        "anthropic parse_request": lambda: anthropic_request.parse_request(MESSAGES),
        "tags (header of 3 + metadata of 1)": _tags(),
    }
    for name, fn in cases.items():
        if fn is not None:
            best = min(timeit.repeat(fn, number=n, repeat=5))
            print(f"{name:40s} {best / n * 1e6:7.3f} µs")


if __name__ == "__main__":
    main()
