"""Amazon Bedrock's Converse API (bedrock-runtime `converse`, `converse-stream`), both directions, no I/O.

Requests arrive OpenAI-shaped. System/developer text becomes `system` blocks; the turns become
`messages` of content blocks (`text`, `image` with base64 `bytes`, `toolUse`, `toolResult`),
same-role neighbours merged because Converse requires alternation; a part's `cache_control` becomes
a `cachePoint` after it. Sampling goes in `inferenceConfig`, tools in `toolConfig` (`toolSpec` with
`inputSchema.json`), `top_k` in `additionalModelRequestFields`, `response_format` in
`outputConfig.textFormat`. `tool_choice: none` has no Converse form: the tools are left out (kept,
without a choice, when the conversation already holds tool blocks, which Converse then requires).
Other fields are dropped and recorded or refused as keel/wire/translate.py decides for an Anthropic
target: Converse has no place for `seed`, penalties, `reasoning_effort`, `user`, `metadata`, ... (named
in the trace's `keel.dropped` tag), and what the caller would read back (logprobs, audio, ...) is a 400
naming it. An Anthropic-dialect request is first put in the OpenAI dialect by translate.to_openai.

The stream is the AWS event-stream binary framing (keel.wire.aws_eventstream); HttpProvider cuts
the body into messages and the decoder here reads one message per `feed`. Usage is converted to
Keel's convention: Converse's `inputTokens` excludes cache reads and writes, Keel's includes them.
Requests are signed (SigV4) by the I/O layer, never here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import orjson

from keel.errors import ErrorKind, InvalidRequest, ProviderError
from keel.types import (
    JSON,
    ChatEvent,
    ChatRequest,
    EmbeddingRequest,
    EmbeddingResponse,
    Finish,
    Message,
    Start,
    Target,
    Text,
    ToolCallDelta,
    Usage,
)
from keel.wire import aws_eventstream
from keel.wire.base import MAX_TOKENS, Malformed, Outbound, call_arguments, checked_usage, counted, retry_after
from keel.wire.openai_chat import output_cap
from keel.wire.translate import ANTHROPIC, dropped_notes, openai_extra, to_openai

CACHE_POINT: JSON = {"cachePoint": {"type": "default"}}

# ---- ChatRequest -> Converse JSON -------------------------------------------------------------


def model_path(model: str, stream: bool) -> str:
    return f"/model/{quote(model, safe='')}/{'converse-stream' if stream else 'converse'}"


# the extra fields this codec reads (`parallel_tool_calls: false` is recorded as dropped by itself);
# translate.openai_extra refuses or drops the rest
_READS = frozenset({"top_k", "max_completion_tokens", "n", "parallel_tool_calls"})
_TAKES = frozenset({"top_k"})  # what Converse takes of an Anthropic-dialect request (translate.to_openai)


def request_json(request: ChatRequest) -> tuple[JSON, list[str]]:
    """The Converse body for `request`, and the names of the fields it dropped (for the trace)."""
    dropped: list[str] = []
    if request.dialect == ANTHROPIC:
        request, dropped = to_openai(request, _TAKES)
    system, messages = split_messages(request.messages, dropped)
    body: JSON = {"messages": messages}
    if system:
        body["system"] = system
    inference = {
        k: v
        for k, v in (
            ("maxTokens", output_cap(request)),
            ("temperature", request.temperature),
            ("topP", request.top_p),
            ("stopSequences", list(request.stop) or None),
        )
        if v is not None
    }
    if inference:
        body["inferenceConfig"] = inference
    tools = _tool_config(request, _holds_tool_blocks(messages), dropped)
    if tools is not None:
        body["toolConfig"] = tools
    if request.extra.get("top_k") is not None:
        body["additionalModelRequestFields"] = {"top_k": request.extra["top_k"]}
    if request.response_format is not None and request.response_format.get("type") != "text":
        body["outputConfig"] = {"textFormat": _text_format(request.response_format)}
    dropped += [name for name, value in (("user", request.user), ("metadata", request.metadata)) if value]
    if request.extra.get("parallel_tool_calls") is False:
        dropped.append("parallel_tool_calls")
    dropped += openai_extra(request.extra, _READS, "Bedrock")
    return body, dropped


_ANY_OBJECT: JSON = {"name": "json", "schema": {"type": "object"}}  # json_object: any JSON object


def _text_format(fmt: JSON) -> JSON:
    spec = fmt.get("json_schema") if fmt.get("type") == "json_schema" else _ANY_OBJECT
    if (
        fmt.get("type") not in ("json_schema", "json_object")
        or not isinstance(spec, dict)
        or not isinstance(spec.get("schema"), dict)
    ):
        raise InvalidRequest(
            "'response_format' must be text, json_object or json_schema with a 'schema' object.", "response_format"
        )
    definition: JSON = {"schema": orjson.dumps(spec["schema"]).decode(), "name": str(spec.get("name") or "response")}
    if spec.get("description"):
        definition["description"] = spec["description"]
    return {"type": "json_schema", "structure": {"jsonSchema": definition}}


def split_messages(messages: Sequence[Message], dropped: list[str]) -> tuple[list[JSON], list[JSON]]:
    """The `system` blocks and the alternating turns; message fields Converse has no place for are
    named in `dropped`."""
    system: list[JSON] = []
    turns: list[JSON] = []
    for i, m in enumerate(messages):
        if m.name is not None and m.role != "tool":
            dropped.append("messages[].name")
        dropped.extend(f"messages[].{k}" for k in m.extra or {})
        if m.role in ("system", "developer"):
            blocks = _blocks(m.content, i, dropped)
            if any("image" in b for b in blocks):
                raise InvalidRequest("Bedrock takes only text in system prompts.", f"messages[{i}].content")
            system.extend(blocks)
            continue
        role, blocks = _turn(m, i, dropped)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return system, turns


def _turn(m: Message, i: int, dropped: list[str]) -> tuple[str, list[JSON]]:
    if m.role == "user":
        return "user", _blocks(m.content, i, dropped)
    if m.role == "assistant":
        uses = [
            {"toolUse": {"toolUseId": c.id, "name": c.name, "input": call_arguments(c.arguments, c.id, i)}}
            for c in m.tool_calls
        ]
        return "assistant", _blocks(m.content, i, dropped) + uses
    if m.role == "tool":
        text = m.content if isinstance(m.content, str) else "".join(str(p.get("text") or "") for p in m.content or [])
        result: JSON = {"toolUseId": m.tool_call_id or "", "content": [{"text": text}]}
        return "user", [{"toolResult": result}]
    raise InvalidRequest(f"Bedrock targets do not accept '{m.role}' messages.", f"messages[{i}].role")


def _blocks(content: str | list[JSON] | None, i: int, dropped: list[str]) -> list[JSON]:
    if not content:
        return []
    if isinstance(content, str):
        return [{"text": content}]
    blocks: list[JSON] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            if part["text"]:
                blocks.append({"text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            if isinstance(image, dict) and image.get("detail") not in (None, "auto"):
                dropped.append("image_url.detail")
            blocks.append(_image(image, f"messages[{i}].content[{j}].image_url.url"))
        else:
            raise InvalidRequest(
                "Bedrock targets accept text and image_url content parts.", f"messages[{i}].content[{j}].type"
            )
        if "cache_control" in part:
            blocks.append(dict(CACHE_POINT))
    return blocks


_DATA_URL = re.compile(r"data:image/(png|jpeg|gif|webp);base64,(.*)", re.S)


def _image(image: Any, where: str) -> JSON:
    url = image.get("url") if isinstance(image, dict) else image
    match = _DATA_URL.fullmatch(url) if isinstance(url, str) else None
    if match is None:
        raise InvalidRequest("Bedrock targets take images as base64 data URLs of png, jpeg, gif or webp.", where)
    return {"image": {"format": match.group(1), "source": {"bytes": match.group(2)}}}


def _holds_tool_blocks(messages: list[JSON]) -> bool:
    return any("toolUse" in b or "toolResult" in b for m in messages for b in m["content"])


def _tool_config(request: ChatRequest, required: bool, dropped: list[str]) -> JSON | None:
    if not request.tools:
        return None
    choice = request.tool_choice
    if choice == "none" and not required:
        return None
    specs = []
    for i, tool in enumerate(request.tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise InvalidRequest("Bedrock targets take function tools with a 'name'.", f"tools[{i}]")
        spec: JSON = {"name": fn["name"]}
        if fn.get("description"):
            spec["description"] = fn["description"]
        spec["inputSchema"] = {"json": fn.get("parameters") or {"type": "object", "properties": {}}}
        specs.append({"toolSpec": spec})
        if fn.get("strict"):
            dropped.append("tools[].function.strict")
        if "cache_control" in tool:
            specs.append(dict(CACHE_POINT))
    config: JSON = {"tools": specs}
    picked = _tool_choice(choice)
    if picked is not None:
        config["toolChoice"] = picked
    return config


def _tool_choice(choice: str | JSON | None) -> JSON | None:
    if choice is None or choice == "none":
        return None
    if choice == "auto":
        return {"auto": {}}
    if choice == "required":
        return {"any": {}}
    fn = choice.get("function") if isinstance(choice, dict) else None
    if isinstance(fn, dict) and isinstance(fn.get("name"), str):
        return {"tool": {"name": fn["name"]}}
    raise InvalidRequest(
        "'tool_choice' must be 'auto', 'none', 'required' or {\"type\": \"function\", \"function\": {\"name\": ...}}.",
        "tool_choice",
    )


# ---- Converse JSON -> events ------------------------------------------------------------------

_FINISH = {"tool_use": "tool_calls", "max_tokens": "length", "model_context_window_exceeded": "length"}
_FINISH |= {"guardrail_intervened": "content_filter", "content_filtered": "content_filter"}


def finish_reason(reason: Any) -> str:
    return _FINISH.get(reason, "stop") if isinstance(reason, str) else "stop"


def usage_from(u: Mapping[str, Any], cap: int = MAX_TOKENS, problems: list[str] | None = None) -> Usage:
    found = problems if problems is not None else []
    read = counted(u.get("cacheReadInputTokens"), cap, "cacheReadInputTokens", found)
    written = counted(u.get("cacheWriteInputTokens"), cap, "cacheWriteInputTokens", found)
    return Usage(
        input_tokens=counted(u.get("inputTokens"), cap, "inputTokens", found) + read + written,
        output_tokens=counted(u.get("outputTokens"), cap, "outputTokens", found),
        cached_input_tokens=read,
        cache_write_tokens=written,
    )


def events_from_response(data: Any, cap: int = MAX_TOKENS) -> list[ChatEvent]:
    try:
        content = data["output"]["message"]["content"]
        events: list[ChatEvent] = [Start("", "")]
        text = "".join(b["text"] for b in content if isinstance(b.get("text"), str))
        if text:
            events.append(Text(text))
        uses = [b["toolUse"] for b in content if isinstance(b.get("toolUse"), dict)]
        for n, use in enumerate(uses):
            arguments = orjson.dumps(use.get("input") or {}).decode()
            events.append(
                ToolCallDelta(n, str(use.get("toolUseId") or f"call_{n}"), str(use.get("name") or ""), arguments)
            )
        events.append(Finish(finish_reason(data.get("stopReason"))))
    except (KeyError, TypeError, AttributeError):
        raise _protocol("Bedrock answer is not shaped like a Converse response") from None
    return events + checked_usage(data.get("usage") or {}, cap, usage_from)


def _protocol(message: str) -> ProviderError:
    return ProviderError(ErrorKind.protocol, message)


class BedrockStreamDecoder:
    """ConverseStream events, one event-stream message per `feed`. Complete at `messageStop`; the
    `metadata` event after it carries the usage (missing, the usage is zero)."""

    __slots__ = ("_argless", "_cap", "_malformed", "_metered", "_tools", "done")

    def __init__(self, cap: int = MAX_TOKENS) -> None:
        self.done = False
        self._cap = cap
        self._malformed = Malformed()
        self._metered = False
        self._tools: dict[Any, int] = {}  # contentBlockIndex -> tool call index
        self._argless: set[int] = set()

    def feed(self, data: bytes) -> list[ChatEvent]:
        message = aws_eventstream.parse(data)
        kind = message.headers.get(":message-type")
        if kind == "exception":
            raise stream_error(str(message.headers.get(":exception-type") or ""), message.payload)
        if kind == "error":
            code, text = message.headers.get(":error-code"), message.headers.get(":error-message")
            raise error_from(str(code or ""), str(text or ""), None)
        try:
            event = orjson.loads(message.payload) if message.payload else {}
            return self._event(str(message.headers.get(":event-type") or ""), event)
        except (ValueError, TypeError, AttributeError):
            return self._malformed.skip(message.payload, "Bedrock stream event")

    def _event(self, kind: str, event: JSON) -> list[ChatEvent]:
        if kind == "messageStart":
            return [Start("", "")]
        if kind == "contentBlockStart":
            use = (event.get("start") or {}).get("toolUse")
            if not isinstance(use, dict):
                return []
            n = self._tools[event.get("contentBlockIndex")] = len(self._tools)
            self._argless.add(n)
            return [ToolCallDelta(n, str(use.get("toolUseId") or f"call_{n}"), str(use.get("name") or ""), "")]
        if kind == "contentBlockDelta":
            return self._delta(event.get("contentBlockIndex"), event.get("delta") or {})
        if kind == "contentBlockStop":
            ended = self._tools.get(event.get("contentBlockIndex"))
            if ended is None or ended not in self._argless:
                return []
            self._argless.discard(ended)
            return [ToolCallDelta(ended, arguments="{}")]
        if kind == "messageStop":
            self.done = True
            return [Finish(finish_reason(event.get("stopReason")))]
        if kind == "metadata" and not self._metered:
            self._metered = True
            return checked_usage(event.get("usage") or {}, self._cap, usage_from)
        return []

    def _delta(self, index: Any, delta: JSON) -> list[ChatEvent]:
        if isinstance(delta.get("text"), str) and delta["text"]:
            return [Text(delta["text"])]
        n = self._tools.get(index)
        piece = (delta.get("toolUse") or {}).get("input")
        if n is not None and isinstance(piece, str) and piece:
            self._argless.discard(n)
            return [ToolCallDelta(n, arguments=piece)]
        return []  # reasoning and citation deltas are not part of the OpenAI answer

    def close(self) -> list[ChatEvent]:
        if not self.done:
            raise _protocol("upstream stream ended before the answer finished (no messageStop)")
        return [] if self._metered else checked_usage({}, self._cap, usage_from)


# ---- errors -----------------------------------------------------------------------------------

_KIND = {"ThrottlingException": ErrorKind.rate_limited, "ServiceQuotaExceededException": ErrorKind.rate_limited}
_KIND |= {"ModelNotReadyException": ErrorKind.overloaded, "ServiceUnavailableException": ErrorKind.overloaded}
_KIND |= {"InternalServerException": ErrorKind.server, "ModelErrorException": ErrorKind.server}
_KIND |= {"ModelStreamErrorException": ErrorKind.server, "ModelTimeoutException": ErrorKind.timeout}
_KIND |= {"ValidationException": ErrorKind.bad_request, "ResourceNotFoundException": ErrorKind.not_found}
_KIND |= {"AccessDeniedException": ErrorKind.auth, "UnrecognizedClientException": ErrorKind.auth}
_KIND |= {"InvalidSignatureException": ErrorKind.auth, "ExpiredTokenException": ErrorKind.auth}
_HTTP = {400: ErrorKind.bad_request, 401: ErrorKind.auth, 403: ErrorKind.auth, 404: ErrorKind.not_found}
_HTTP |= {408: ErrorKind.timeout, 429: ErrorKind.rate_limited, 500: ErrorKind.server, 503: ErrorKind.overloaded}
# "Input is too long for requested model."; "prompt is too long: 208656 tokens > 200000 maximum"
_CONTEXT_WORDING = ("too long", "too many input tokens", "context window", "context length")


def error_from(error_type: str, message: str, status: int | None) -> ProviderError:
    """`error_type`: the exception's name (x-amzn-errortype, or an in-stream `:exception-type`)."""
    name = error_type.split(":", 1)[0]
    name = name[:1].upper() + name[1:]  # in-stream names are lowerCamel: throttlingException
    kind = _KIND.get(name) or _HTTP.get(status or 0)
    if kind is None:
        kind = ErrorKind.bad_request if status is not None and 400 <= status < 500 else ErrorKind.server
    if kind is ErrorKind.bad_request and any(w in message.lower() for w in _CONTEXT_WORDING):
        kind = ErrorKind.context_length
    fallback = f"upstream answered HTTP {status}" if status else f"upstream error: {name or 'unknown'}"
    return ProviderError(kind, message or fallback, status=status or 200)


def _message(payload: bytes) -> str:
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return ""
    if not isinstance(data, dict):
        return ""
    return str(data.get("message") or data.get("Message") or "")


def stream_error(exception_type: str, payload: bytes) -> ProviderError:
    return error_from(exception_type, _message(payload), None)


def classify(status: int, body: bytes, headers: Mapping[str, str]) -> ProviderError:
    err = error_from(headers.get("x-amzn-errortype", ""), _message(body), status)
    err.retry_after = retry_after(headers)
    return err


def _no_embeddings() -> ProviderError:
    return ProviderError(ErrorKind.bad_request, "bedrock (Converse) providers do not offer embeddings")


# ---- the codec --------------------------------------------------------------------------------


class BedrockCodec:
    def encode_chat(self, request: ChatRequest, target: Target, stream: bool) -> Outbound:
        body, dropped = request_json(request)
        return Outbound(model_path(target.model, stream), orjson.dumps(body), notes=dropped_notes(dropped))

    def decode_chat(self, body: bytes, cap: int = MAX_TOKENS) -> list[ChatEvent]:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise _protocol(f"malformed Bedrock answer: {body[:80]!r}") from None
        return events_from_response(data, cap)

    def stream_decoder(self, cap: int = MAX_TOKENS) -> BedrockStreamDecoder:
        return BedrockStreamDecoder(cap)

    def encode_embed(self, request: EmbeddingRequest, target: Target) -> Outbound:
        raise _no_embeddings()

    def decode_embed(self, body: bytes) -> EmbeddingResponse:
        raise _no_embeddings()

    classify = staticmethod(classify)
