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

from collections.abc import Callable, Collection
from dataclasses import replace
from typing import Any

from keel.errors import InvalidRequest
from keel.types import IS_ERROR, JSON, PREFIX, THINKING, ChatRequest, Message, Note
from keel.wire.anthropic_schema import anthropic_schema

DROPPED_TAG = "keel.dropped"
OPENAI = "openai_chat"
ANTHROPIC = "anthropic_messages"
TOOL_ERROR = "[tool error] "  # how an Anthropic `is_error` tool result reads on a wire without the flag

# reasoning_effort -> thinking.budget_tokens (Anthropic's minimum budget is 1024), and back by threshold
BUDGETS = {"minimal": 1024, "low": 1024, "medium": 4096, "high": 16384, "xhigh": 32768}
_EFFORTS = ((4096, "low"), (16384, "medium"))  # budget below the bound -> effort; else "high"

_EFFORT_NAMES = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}  # output_config

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


# ---- OpenAI dialect -> an Anthropic target (the body itself: keel.wire.anthropic_messages) ---------

# The forced tool standing in for `response_format` where the model has no native structured output:
# its call's arguments come back as the message's text (the Anthropic decoders turn them so).
ANSWER_TOOL = "keel_structured_output"
_ANY_OBJECT: JSON = {"type": "object", "additionalProperties": True}
_OPENAI_KEPT = frozenset({"reasoning_effort", "thinking", "stream_options"})  # read here, not sent as they are
_ANTHROPIC_READS = frozenset({"parallel_tool_calls", "top_k", "max_completion_tokens"}) | _OPENAI_KEPT


def structured(
    fmt: JSON | None, tools: list[JSON], choice: JSON | None, native: bool, body: JSON
) -> tuple[list[JSON], JSON | None]:
    """`response_format` as Anthropic takes it: `output_config.format` where the model has structured
    outputs, else a forced call of ANSWER_TOOL (beside the caller's tools: then any tool may be called)."""
    kind = fmt.get("type") if fmt is not None else "text"
    if kind == "text":
        return tools, choice
    if kind == "json_schema":
        spec = fmt.get("json_schema") if fmt is not None else None
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise InvalidRequest(
                "A json_schema response_format needs 'json_schema.schema', an object.", "response_format"
            )
        if native:
            body["output_config"] = {"format": {"type": "json_schema", "schema": anthropic_schema(schema)}}
            return tools, choice
    elif kind == "json_object":
        schema = _ANY_OBJECT
    else:
        raise InvalidRequest(
            "'response_format.type' must be 'text', 'json_object' or 'json_schema'.", "response_format"
        )
    if any(t["name"] == ANSWER_TOOL for t in tools):
        raise InvalidRequest(f"The tool name '{ANSWER_TOOL}' is Keel's own; rename the tool.", "tools")
    answer = {
        "name": ANSWER_TOOL,
        "description": "Give the answer: its input is the whole reply.",
        "input_schema": schema,
    }
    if not tools or (choice or {}).get("type") == "none":
        return [answer], {"type": "tool", "name": ANSWER_TOOL}
    return [*tools, answer], choice if (choice or {}).get("type") == "tool" else {"type": "any"}


# Anthropic thinks only at temperature 1, top_p of at least 0.95 and without top_k
_THINKABLE: dict[str, Callable[[Any], bool]] = {
    "temperature": lambda v: v == 1,
    "top_p": lambda v: v >= 0.95,
    "top_k": lambda v: False,
}


def unthinkable(sampling: JSON) -> list[str]:
    """The sampling fields of a translated call that thinking cannot run with, taken out of `sampling`:
    dropped, as the caller asked for thinking over them (Anthropic would refuse the whole call)."""
    bad = [k for k, v in sampling.items() if v is not None and not _THINKABLE[k](v)]
    for k in bad:
        sampling[k] = None
    return bad


def openai_extra(extra: JSON, reads: Collection[str] = _ANTHROPIC_READS, target: str = "Anthropic") -> list[str]:
    """The OpenAI-dialect fields a `target` body cannot carry (all but those its codec `reads`): a
    refusal for those whose loss changes the answer (when they ask for anything), else their names,
    dropped. The Gemini and Bedrock codecs use it too, with their own `reads`."""
    dropped = []
    for key, value in extra.items():
        if key in reads:
            continue
        if key in OPENAI_REFUSED and value not in (None, False, [], {}, 0):
            raise refusal(key, target)
        if key == "modalities" and value not in (None, ["text"]):
            raise refusal(key, target)
        dropped.append(key)
    return dropped


# ---- Anthropic dialect -> an OpenAI-compatible target ------------------------------------------


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
            # the format is in `response_format` already (parsed at the edge); `effort` is reasoning effort
            for k, v in (value if isinstance(value, dict) else {}).items():
                if k == "effort" and v in _EFFORT_NAMES:
                    ok = "reasoning_effort" in quirks
                    _carry(extra, dropped, ok, "reasoning_effort", _EFFORT_NAMES[v], f"{key}.effort")
                elif k != "format":
                    dropped.append(f"{key}.{k}")
        elif key in ANTHROPIC_REFUSED:
            raise refusal(key, "OpenAI-compatible")
        else:
            dropped.append(key)
    if request.betas:
        dropped.append("anthropic-beta")
    messages = tuple(_openai_message(m, i, dropped) for i, m in enumerate(request.messages))
    tools = tuple(_openai_tool(t, dropped) for t in request.tools)
    return replace(request, messages=messages, tools=tools, extra=extra, dialect=OPENAI, betas=()), dropped


def _openai_tool(tool: JSON, dropped: list[str]) -> JSON:
    """An Anthropic client's tool without the fields of Anthropic's own (cache_control stays: OpenAI-
    compatible servers that cache take it)."""
    kept = {k: v for k, v in tool.items() if k in ("type", "function", "cache_control")}
    dropped.extend(f"tools[].{k}" for k in tool if k not in kept)
    return kept


def _carry(extra: JSON, dropped: list[str], ok: bool, key: str, value: Any, name: str | None = None) -> None:
    if ok:
        extra.setdefault(key, value)  # `thinking` before `output_config.effort`: the first one given wins
    else:
        dropped.append(name or key)


def _openai_message(m: Message, i: int, dropped: list[str]) -> Message:
    content = m.content
    if isinstance(content, list) and any(p.get("type") == "document" for p in content):
        content = [_file_part(p, f"messages[{i}].content[{j}]") for j, p in enumerate(content)]
    if not m.extra:
        return m if content is m.content else replace(m, content=content)
    if m.extra.get(IS_ERROR) is True:
        if isinstance(content, list):
            content = [{"type": "text", "text": TOOL_ERROR.strip()}, *content]
        else:
            content = TOOL_ERROR + (content or "")
    if m.extra.get(THINKING):
        dropped.append("messages[].thinking")
    kept = {PREFIX: True} if m.extra.get(PREFIX) is True else None
    return replace(m, content=content, extra=kept)


def _file_part(part: JSON, where: str) -> JSON:
    """An Anthropic `document` block as an OpenAI part: a PDF (base64 or URL) as a `file` part, plain
    text as a text part; other sources (Anthropic's Files API, content blocks) have no OpenAI form."""
    if part.get("type") != "document":
        return part
    source = part.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    out: JSON
    if kind == "base64" and isinstance(source, dict):
        out = {"type": "file", "file": {"file_data": f"data:{source.get('media_type')};base64,{source.get('data')}"}}
    elif kind == "url" and isinstance(source, dict):
        out = {"type": "file", "file": {"file_data": source.get("url")}}
    elif kind == "text" and isinstance(source, dict):
        out = {"type": "text", "text": str(source.get("data") or "")}
    else:
        raise InvalidRequest(f"A '{kind}' document source cannot be carried to an OpenAI-compatible target.", where)
    if isinstance(part.get("title"), str) and out["type"] == "file":
        out["file"]["filename"] = part["title"]
    if "cache_control" in part:
        out["cache_control"] = part["cache_control"]
    return out
