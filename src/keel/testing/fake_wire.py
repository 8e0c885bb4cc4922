"""Wire bodies of the fake upstream: OpenAI chat/embeddings and Anthropic Messages, JSON and SSE.

Written by hand from the providers' public API references and deliberately independent of
Keel's own codecs, so that a bug in a codec cannot be cancelled by the same bug here.
Pure functions, no I/O. Replies are deterministic apart from ids and timestamps.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

USAGE_KEYS = frozenset(
    {
        "prompt_tokens",
        "completion_tokens",
        "cached_tokens",
        "reasoning_tokens",
        "cache_creation_tokens",
    }
)
TOOL_ARGUMENTS = '{"city": "Paris"}'
DEFAULT_TOOL = "get_weather"
MODEL_ID = "fake-model"
SIGNATURE = "EqQBCgIYAhIMfake"  # the signature the fake puts on its thinking blocks
# The top-level fields OpenAI's chat completions take; a `strict` script refuses any other, as OpenAI does.
OPENAI_CHAT_FIELDS = frozenset(
    {"model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "temperature"}
    | {"top_p", "stop", "tools", "tool_choice", "parallel_tool_calls", "response_format", "user", "metadata"}
    | {"n", "seed", "logprobs", "top_logprobs", "logit_bias", "presence_penalty", "frequency_penalty"}
    | {"reasoning_effort", "store", "service_tier", "modalities", "audio", "prediction", "web_search_options"}
    | {"prompt_cache_key", "safety_identifier", "verbosity", "functions", "function_call"}
)

Json = dict[str, Any]
FrameKind = Literal["head", "content", "tail", "end"]


@dataclass(frozen=True)
class Answer:
    """What the fake model replies, before it is put in either wire format."""

    model: str
    text: str
    tool_name: str | None  # set when the reply is one tool call instead of text
    usage: dict[str, int]  # the USAGE_KEYS, prompt_tokens including cached ones
    include_usage: bool  # OpenAI stream_options.include_usage
    bad_usage: Json | None = None  # merged into the usage object as sent, in the format's own field names
    arguments: str = TOOL_ARGUMENTS  # the tool call's arguments (JSON text)
    thinking: str | None = None  # reasoning shown before the reply (Anthropic: when the request enables it)


@dataclass(frozen=True)
class Frame:
    """One SSE event. `content` frames carry reply text or tool arguments; `end` is the end marker."""

    kind: FrameKind
    data: str
    event: str | None = None

    def encode(self) -> bytes:
        head = f"event: {self.event}\n" if self.event else ""
        return f"{head}data: {self.data}\n\n".encode()

    def malformed(self) -> Frame:
        return Frame(self.kind, '{"malformed": "unterminated', self.event)


def _text_of(content: object) -> str:
    """Concatenated text of a message content: a string, or a list of parts/blocks (both formats)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(_text_of(part) for part in content)
    if isinstance(content, dict):
        text = content.get("text")
        return text if isinstance(text, str) else _text_of(content.get("content"))
    return ""


def _first_tool(tools: object) -> str:
    if not isinstance(tools, list) or not tools or not isinstance(tools[0], dict):
        return DEFAULT_TOOL
    first = tools[0]
    function = first.get("function")
    name = function.get("name") if isinstance(function, dict) else first.get("name")
    return name if isinstance(name, str) else DEFAULT_TOOL


def pieces(text: str) -> list[str]:
    """Split text into word pieces whose concatenation is the text (one stream chunk each)."""
    return re.findall(r"\s*\S+\s*", text) or ([text] if text else [])


def prefill(body: Json, *, anthropic: bool) -> str | None:
    """The assistant text a request asks the model to continue, or None.

    Anthropic continues any trailing assistant message; an OpenAI-compatible server only one marked
    `prefix: true` (Mistral, DeepSeek) or asked with `continue_final_message` (vLLM).
    """
    messages = body.get("messages")
    last = messages[-1] if isinstance(messages, list) and messages else None
    if not isinstance(last, dict) or last.get("role") != "assistant":
        return None
    if anthropic or last.get("prefix") is True or body.get("continue_final_message") is True:
        return _text_of(last.get("content"))
    return None


def prefill_refusal(body: Json, prefill: str | None, *, anthropic: bool, refuse: bool) -> Json | None:
    """The 400 body a server answers a prefill it will not take with, or None when it takes it."""
    if prefill is None:
        return None
    if anthropic and prefill != prefill.rstrip():
        return anthropic_error_with("messages: final assistant content cannot end with trailing whitespace")
    if not anthropic and body.get("continue_final_message") is True and body.get("add_generation_prompt") is not False:
        message = "Cannot set both `continue_final_message` and `add_generation_prompt` to True."
        return {"error": {"message": message, "type": "BadRequestError", "param": None, "code": 400}}
    if refuse:
        if anthropic:
            return anthropic_error_with("messages: a final assistant message is not supported by this model")
        return openai_error(400, None)
    return None


def plan(
    body: Json,
    *,
    text: str | None,
    tool_call: bool,
    usage: dict[str, int] | None,
    model: str | None,
    bad_usage: Json | None = None,
    prefill: str | None = None,
    arguments: str | None = None,
    thinking: str | None = None,
    anthropic: bool = False,
) -> Answer:
    """Decide the reply to a chat request (either format) under a script's overrides.

    With a prefill, the reply is the rest of the answer after it (the whole answer if it does not begin so).
    A tool_choice naming a tool is obeyed (Anthropic's `{"type": "tool"}` forces the call, as the model
    does); Anthropic shows `thinking` only when the request enables it, an OpenAI-compatible reasoner always.
    """
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    chars = len(_text_of(body.get("system"))) + sum(len(_text_of(m.get("content"))) for m in messages)
    last_user = next((_text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    reply = text if text is not None else "echo: " + last_user
    if prefill and reply.startswith(prefill):
        reply = reply[len(prefill) :]
    forced = _forced_tool(body.get("tool_choice"))
    tool_call = tool_call or (anthropic and forced is not None)
    tool_name = (forced or _first_tool(body.get("tools"))) if tool_call else None
    arguments = arguments or TOOL_ARGUMENTS
    config = body.get("thinking")
    if anthropic and not (isinstance(config, dict) and config.get("type") in ("enabled", "adaptive")):
        thinking = None
    numbers = {key: 0 for key in USAGE_KEYS}
    numbers["prompt_tokens"] = chars // 4 + 1
    numbers["completion_tokens"] = len((arguments if tool_name else reply).split())
    numbers.update(usage or {})
    options = body.get("stream_options")
    return Answer(
        model=model or str(body.get("model") or MODEL_ID),
        text=reply,
        tool_name=tool_name,
        usage=numbers,
        include_usage=isinstance(options, dict) and options.get("include_usage") is True,
        bad_usage=bad_usage,
        arguments=arguments,
        thinking=thinking,
    )


def _forced_tool(choice: object) -> str | None:
    """The tool a tool_choice names: Anthropic {type: tool, name} or OpenAI {type: function, function: {name}}."""
    if not isinstance(choice, dict):
        return None
    function = choice.get("function")
    name = function.get("name") if isinstance(function, dict) else choice.get("name")
    return name if isinstance(name, str) and choice.get("type") in ("tool", "function") else None


def new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


# --- OpenAI ---------------------------------------------------------------------------------


def _openai_usage(a: Answer) -> Json:
    u = a.usage
    return {
        "prompt_tokens": u["prompt_tokens"],
        "completion_tokens": u["completion_tokens"],
        "total_tokens": u["prompt_tokens"] + u["completion_tokens"],
        "prompt_tokens_details": {"cached_tokens": u["cached_tokens"]},
        "completion_tokens_details": {"reasoning_tokens": u["reasoning_tokens"]},
        **(a.bad_usage or {}),
    }


def openai_completion(a: Answer) -> Json:
    message: Json = {"role": "assistant", "content": a.text, "refusal": None}
    if a.thinking:
        message["reasoning_content"] = a.thinking
    if a.tool_name:
        call = {"name": a.tool_name, "arguments": a.arguments}
        message["content"] = None
        message["tool_calls"] = [{"id": new_id("call_"), "type": "function", "function": call}]
    return {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": a.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if a.tool_name else "stop",
                "logprobs": None,
            }
        ],
        "usage": _openai_usage(a),
    }


def openai_frames(a: Answer) -> list[Frame]:
    """Chunks of an OpenAI chat completion stream, `data: [DONE]` last."""
    base: Json = {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
    }
    base["model"] = a.model

    def chunk(kind: FrameKind, delta: Json, finish: str | None = None) -> Frame:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        extra = {"usage": None} if a.include_usage else {}
        return Frame(kind, json.dumps({**base, "choices": [choice], **extra}))

    frames = [chunk("head", {"role": "assistant", "content": ""})]
    frames += [chunk("content", {"reasoning_content": part}) for part in pieces(a.thinking or "")]
    if a.tool_name:
        call = {"index": 0, "id": new_id("call_"), "type": "function"}
        call["function"] = {"name": a.tool_name, "arguments": ""}
        frames.append(chunk("content", {"tool_calls": [call]}))
        for part in pieces(a.arguments):
            frames.append(chunk("content", {"tool_calls": [{"index": 0, "function": {"arguments": part}}]}))
    else:
        frames += [chunk("content", {"content": part}) for part in pieces(a.text)]
    frames.append(chunk("tail", {}, "tool_calls" if a.tool_name else "stop"))
    if a.include_usage:
        frames.append(Frame("tail", json.dumps({**base, "choices": [], "usage": _openai_usage(a)})))
    frames.append(Frame("end", "[DONE]"))
    return frames


_OPENAI_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", None, "The server had an error while processing your request."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
    529: ("server_error", "overloaded", "The server is overloaded."),
}
_CODE_MESSAGES = {
    "context_length_exceeded": "This model's maximum context length is 8192 tokens. "
    "However, your messages resulted in 9000 tokens. Please reduce the length of the messages.",
    "content_filter": "The response was filtered due to the prompt triggering content management policy.",
}


def error_frame(anthropic: bool, body: Json) -> Frame:
    """An error event inside a stream that began with HTTP 200."""
    return Frame("tail", json.dumps(body), "error" if anthropic else None)


def interrupted(frames: list[Frame], after: int, error: Frame) -> list[Frame]:
    """The frames up to `after` content frames (no frame at all for 0), then `error`, then nothing."""
    if after == 0:
        return [error]
    out: list[Frame] = []
    sent = 0
    for frame in frames:
        if sent == after:
            break
        out.append(frame)
        sent += frame.kind == "content"
    return [*out, error]


def openai_error(status: int, code: str | None) -> Json:
    kind, default_code, message = _OPENAI_ERRORS.get(
        status,
        ("invalid_request_error" if status < 500 else "server_error", None, f"Error {status}."),
    )
    param = "messages" if code == "context_length_exceeded" else None
    message = _CODE_MESSAGES.get(code or "", message)
    return {"error": {"message": message, "type": kind, "param": param, "code": code or default_code}}


def embeddings(body: Json, model: str | None) -> Json | None:
    """An embeddings list for a string or list-of-strings input, or None when the input is neither."""
    raw = body.get("input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        return None
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for index, text in enumerate(texts):
        digest = hashlib.sha256(text.encode()).digest()
        vector = [round(int.from_bytes(digest[4 * i : 4 * i + 4], "big") / 2**31 - 1, 6) for i in range(8)]
        encoded: object = base64.b64encode(struct.pack("<8f", *vector)).decode() if as_base64 else vector
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    tokens = sum(len(t) for t in texts) // 4 + 1
    return {
        "object": "list",
        "data": data,
        "model": model or str(body.get("model") or MODEL_ID),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def models_list() -> Json:
    model = {"id": MODEL_ID, "object": "model", "created": 1700000000, "owned_by": "fake-upstream"}
    return {"object": "list", "data": [model]}


# --- Anthropic ------------------------------------------------------------------------------


def _anthropic_usage(a: Answer, output_tokens: int) -> Json:
    u = a.usage
    fresh = u["prompt_tokens"] - u["cached_tokens"] - u["cache_creation_tokens"]
    return {
        "input_tokens": max(fresh, 0),
        "output_tokens": output_tokens,
        "cache_read_input_tokens": u["cached_tokens"],
        "cache_creation_input_tokens": u["cache_creation_tokens"],
        **(a.bad_usage or {}),
    }


def _anthropic_block(a: Answer, tool_id: str, *, empty: bool) -> Json:
    if a.tool_name:
        tool_input = {} if empty else json.loads(a.arguments)
        return {"type": "tool_use", "id": tool_id, "name": a.tool_name, "input": tool_input}
    return {"type": "text", "text": "" if empty else a.text}


def anthropic_message(a: Answer) -> Json:
    return {
        "id": new_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": a.model,
        "content": [*_thinking_blocks(a), _anthropic_block(a, new_id("toolu_"), empty=False)],
        "stop_reason": "tool_use" if a.tool_name else "end_turn",
        "stop_sequence": None,
        "usage": _anthropic_usage(a, a.usage["completion_tokens"]),
    }


def _thinking_blocks(a: Answer) -> list[Json]:
    return [{"type": "thinking", "thinking": a.thinking, "signature": SIGNATURE}] if a.thinking else []


def anthropic_frames(a: Answer) -> list[Frame]:
    """Events of an Anthropic Messages stream, `message_stop` last."""

    def event(kind: FrameKind, name: str, payload: Json) -> Frame:
        return Frame(kind, json.dumps({"type": name, **payload}), name)

    start = {**anthropic_message(a), "content": [], "stop_reason": None}
    start["usage"] = _anthropic_usage(a, 1)
    block = _anthropic_block(a, new_id("toolu_"), empty=True)
    frames = [event("head", "message_start", {"message": start})]
    at = 0
    if a.thinking:  # a thinking block first: its text, then its signature
        empty = {"type": "thinking", "thinking": "", "signature": ""}
        frames.append(event("head", "content_block_start", {"index": 0, "content_block": empty}))
        thoughts = [{"type": "thinking_delta", "thinking": p} for p in pieces(a.thinking)]
        thoughts.append({"type": "signature_delta", "signature": SIGNATURE})
        frames += [event("content", "content_block_delta", {"index": 0, "delta": d}) for d in thoughts]
        frames.append(event("content", "content_block_stop", {"index": 0}))
        at = 1
    frames += [
        event("head" if at == 0 else "content", "content_block_start", {"index": at, "content_block": block}),
        event("head", "ping", {}),
    ]
    if a.tool_name:
        deltas = [{"type": "input_json_delta", "partial_json": p} for p in pieces(a.arguments)]
    else:
        deltas = [{"type": "text_delta", "text": p} for p in pieces(a.text)]
    frames += [event("content", "content_block_delta", {"index": at, "delta": d}) for d in deltas]
    stop_reason = "tool_use" if a.tool_name else "end_turn"
    return [
        *frames,
        event("tail", "content_block_stop", {"index": at}),
        event(
            "tail",
            "message_delta",
            {
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": a.usage["completion_tokens"], **(a.bad_usage or {})},
            },
        ),
        event("end", "message_stop", {}),
    ]


_ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_ANTHROPIC_CODE_MESSAGES = {"context_length_exceeded": "prompt is too long: 200001 tokens > 200000 maximum"}


def anthropic_error_with(message: str, kind: str = "invalid_request_error") -> Json:
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": new_id("req_")}


def anthropic_error(status: int, code: str | None) -> Json:
    kind = _ANTHROPIC_ERRORS.get(status, "invalid_request_error" if status < 500 else "api_error")
    message = _ANTHROPIC_CODE_MESSAGES.get(code or "") or (f"{kind}: {code}" if code else f"Error {status}.")
    return {
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": new_id("req_"),
    }
