"""Translation between the OpenAI and Anthropic request shapes: which field is carried, dropped or refused.

A request's `extra` fields are in the dialect of the edge that parsed them (`ChatRequest.dialect`). A
codec of that wire passes them on; a codec of the other wire goes through the tables here:
- carried: translated into the target's own field (`reasoning_effort` <-> `thinking`, `top_k`,
  `parallel_tool_calls` <-> `disable_parallel_tool_use`, `response_format` <-> `output_config.format`);
- dropped and recorded: options whose loss leaves the answer's meaning intact (sampling and service
  hints); every drop is named in the trace's `keel.dropped` tag;
- refused: options the caller reads back, or that change what is asked (logprobs, audio, MCP servers):
  a 400 naming the field, never a silent loss.
Pure data and functions; README "Translation between shapes" has the table.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from typing import Any

from keel.errors import InvalidRequest
from keel.types import IS_ERROR, JSON, PREFIX, THINKING, ChatRequest, Message, Note

DROPPED_TAG = "keel.dropped"
OPENAI = "openai_chat"
ANTHROPIC = "anthropic_messages"
TOOL_ERROR = "[tool error] "  # how an Anthropic `is_error` tool result reads on a wire without the flag

# reasoning_effort -> thinking.budget_tokens (Anthropic's minimum budget is 1024), and back by threshold
BUDGETS = {"minimal": 1024, "low": 1024, "medium": 4096, "high": 16384, "xhigh": 32768}
_EFFORTS = ((4096, "low"), (16384, "medium"))  # budget below the bound -> effort; else "high"

# OpenAI fields an Anthropic target cannot honour and whose loss the caller would notice (the value
# given, when it asks for something: `logprobs: false` asks nothing).
OPENAI_REFUSED = frozenset(
    {"logprobs", "top_logprobs", "audio", "web_search_options", "functions", "function_call", "logit_bias"}
    | {"prediction"}
)
# Anthropic fields that change what is asked, which an OpenAI-shaped upstream cannot run.
ANTHROPIC_REFUSED = frozenset({"mcp_servers", "container"})


def refusal(name: str, target: str) -> InvalidRequest:
    return InvalidRequest(f"'{name}' cannot be carried to a {target} target without changing the answer.", name)


def dropped_notes(dropped: Collection[str]) -> tuple[Note, ...]:
    return (Note(DROPPED_TAG, ", ".join(sorted(set(dropped)))),) if dropped else ()


def thinking_of(effort: Any, cap: int | None, default_cap: int) -> tuple[JSON | None, int]:
    """Anthropic's `thinking` for an OpenAI `reasoning_effort`, and the `max_tokens` to send.

    The budget must be below max_tokens: without a caller's cap, max_tokens is the default plus the
    budget; with one, the budget shrinks under it, and a cap too small to think in is a 400.
    """
    if effort in (None, "none"):
        return None, cap or default_cap
    budget = BUDGETS.get(effort) if isinstance(effort, str) else None
    if budget is None:
        raise InvalidRequest(f"'reasoning_effort' must be one of: none, {', '.join(BUDGETS)}.", "reasoning_effort")
    if cap is None:
        return {"type": "enabled", "budget_tokens": budget}, default_cap + budget
    budget = min(budget, cap - 1)
    if budget < BUDGETS["minimal"]:
        raise InvalidRequest(
            "'reasoning_effort' needs max_tokens above 1024 on an Anthropic target (its least thinking budget).",
            "reasoning_effort",
        )
    return {"type": "enabled", "budget_tokens": budget}, cap


def effort_of(thinking: Any) -> str | None:
    """OpenAI's `reasoning_effort` for an Anthropic `thinking`; None when it asks for no thinking."""
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind == "adaptive":
        return "medium"
    if kind != "enabled":
        return None
    budget = thinking.get("budget_tokens")
    budget = budget if isinstance(budget, int) else BUDGETS["medium"]
    return next((effort for bound, effort in _EFFORTS if budget < bound), "high")


def to_openai(request: ChatRequest, quirks: Collection[str]) -> tuple[ChatRequest, list[str]]:
    """An Anthropic-dialect request in OpenAI's dialect for an OpenAI-compatible target (whose catalog
    `quirks` say whether it takes `top_k` and `reasoning_effort`), and the fields dropped."""
    dropped: list[str] = []
    extra: JSON = {}
    for key, value in request.extra.items():
        if key == "parallel_tool_calls":
            extra[key] = value
        elif key == "top_k":
            _carry(extra, dropped, "top_k" in quirks, key, value)
        elif key == "thinking":
            effort = effort_of(value)
            if effort is not None:
                _carry(extra, dropped, "reasoning_effort" in quirks, "reasoning_effort", effort, key)
        elif key in ("output_config", "output_format"):
            # the format is in `response_format` already (parsed at the edge); anything else is a hint
            dropped.extend(f"{key}.{k}" for k in (value if isinstance(value, dict) else {}) if k != "format")
        elif key in ANTHROPIC_REFUSED:
            raise refusal(key, "OpenAI-compatible")
        else:
            dropped.append(key)
    if request.betas:
        dropped.append("anthropic-beta")
    messages = tuple(_openai_message(m, dropped) for m in request.messages)
    return replace(request, messages=messages, extra=extra, dialect=OPENAI, betas=()), dropped


def _carry(extra: JSON, dropped: list[str], ok: bool, key: str, value: Any, name: str | None = None) -> None:
    if ok:
        extra[key] = value
    else:
        dropped.append(name or key)


def _openai_message(m: Message, dropped: list[str]) -> Message:
    if not m.extra:
        return m
    content = m.content
    if m.extra.get(IS_ERROR) is True:
        if isinstance(content, list):
            content = [{"type": "text", "text": TOOL_ERROR.strip()}, *content]
        else:
            content = TOOL_ERROR + (content or "")
    if m.extra.get(THINKING):
        dropped.append("messages[].thinking")
    kept = {PREFIX: True} if m.extra.get(PREFIX) is True else None
    return replace(m, content=content, extra=kept)
