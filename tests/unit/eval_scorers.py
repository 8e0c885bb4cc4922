"""`python` assertion scorers for the eval tests (module:function, promptfoo's get_assert contract)."""

from __future__ import annotations

from collections.abc import Mapping


def is_short(output: str, context: Mapping[str, object]) -> bool:
    return len(output) < 20


async def graded(output: str, context: Mapping[str, object]) -> dict[str, object]:
    good = "great" in output
    return {"pass": good, "score": 0.9 if good else 0.1, "reason": "tone"}
