"""Keel's internal value types: frozen, slotted dataclasses shaped after OpenAI chat completions.

Pydantic stays at the edges (config, admin bodies); inside, these plain types flow through the
pipeline. Fields Keel does not model travel in `ChatRequest.extra`, in the wire dialect of the edge
that parsed them (`dialect`): a codec of that wire passes them on untouched; a codec of another wire
translates the ones it can, refuses the ones whose loss would change the answer and drops the rest,
recording each drop on the trace (keel/wire/translate.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

JSON = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, exactly as the model produced it


# `Message.extra` key marking a trailing assistant message as a prefill the model continues (the wire
# name Mistral and DeepSeek use, so OpenAI-compatible codecs pass it on; vLLM's dialect is a quirk).
PREFIX = "prefix"
# `Message.extra` keys of the Anthropic dialect: a tool result that reports an error, and the thinking
# blocks (with their signatures) an assistant turn carried, which Anthropic wants back as they were.
IS_ERROR = "is_error"
THINKING = "thinking"


@dataclass(frozen=True, slots=True)
class Message:
    role: str  # system | developer | user | assistant | tool
    content: str | list[JSON] | None = None  # str, or OpenAI content parts
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    extra: JSON | None = None  # unknown message fields, passed through to OpenAI-compatible upstreams


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: str
    messages: tuple[Message, ...]
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    tools: tuple[JSON, ...] = ()  # OpenAI tool definitions, as sent
    tool_choice: str | JSON | None = None
    response_format: JSON | None = None
    user: str | None = None
    metadata: JSON | None = None
    extra: JSON = field(default_factory=dict)  # unknown fields, passed through to upstreams of `dialect`
    dialect: str = "openai_chat"  # the wire `extra` (and Message.extra) is written in
    betas: tuple[str, ...] = ()  # the caller's `anthropic-beta` header values, for Anthropic upstreams


@dataclass(frozen=True, slots=True)
class EmbeddingRequest:
    model: str
    inputs: tuple[str, ...]  # text inputs; empty when the client sent token arrays
    extra: JSON = field(default_factory=dict)
    tokens: tuple[tuple[int, ...], ...] = ()  # token-id inputs, passed to OpenAI-compatible upstreams as they are


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts in OpenAI's convention.

    `input_tokens` counts every prompt token, including `cached_input_tokens` and
    `cache_write_tokens`; `output_tokens` includes `reasoning_tokens`.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0


# Events a provider yields, in order: Start, then any Reasoning/Text/ToolCallDelta, then Finish, then Usage;
# a Note may come anywhere.
@dataclass(frozen=True, slots=True)
class Start:
    id: str
    model: str  # the upstream model that served
    # The prompt's counts when the upstream reports them up front (Anthropic streams); not part of equality.
    prompt: Usage | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Text:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class Reasoning:
    """The model's thinking: text as it streams, then the block's `signature` (Anthropic), or a whole
    redacted block (`redacted`, opaque data). Rendered as `reasoning_content` (OpenAI chat) or as
    thinking blocks (Anthropic)."""

    text: str = ""
    signature: str | None = None
    redacted: str | None = None


@dataclass(frozen=True, slots=True)
class Finish:
    reason: str  # stop | length | tool_calls | content_filter


@dataclass(frozen=True, slots=True)
class UsageEvent:
    usage: Usage


@dataclass(frozen=True, slots=True)
class Note:
    """A fact about the attempt for its trace (a `keel.*` tag), e.g. that its usage was clamped; never
    content, never shown to the client."""

    tag: str
    value: str


ChatEvent = Start | Reasoning | Text | ToolCallDelta | Finish | UsageEvent | Note


@dataclass(frozen=True, slots=True)
class ChatResponse:
    id: str
    model: str
    content: str | None
    tool_calls: tuple[ToolCall, ...]
    finish_reason: str | None
    usage: Usage | None
    # thinking blocks, Anthropic-shaped: {"type": "thinking", "thinking", "signature"} or
    # {"type": "redacted_thinking", "data"}
    reasoning: tuple[JSON, ...] = ()


@dataclass(frozen=True, slots=True)
class EmbeddingResponse:
    model: str
    vectors: tuple[tuple[float, ...], ...]
    usage: Usage


@dataclass(frozen=True, slots=True)
class Target:
    provider: str  # provider name from config
    model: str  # upstream model id
    context_window: int | None = None  # tokens; None = unknown
    capabilities: frozenset[str] | None = None  # tools, vision, json; None = assumed all
    weight: float = 1.0

    @property
    def key(self) -> str:
        return f"{self.provider}/{self.model}"


@dataclass(frozen=True, slots=True)
class RoutePlan:
    alias: str
    targets: tuple[Target, ...]  # in the order to try
    reason: str  # the rule that fired
    explain: JSON = field(default_factory=dict)  # candidates, and why each skipped one was skipped
    fallbacks: tuple[str, ...] = ()  # degraded aliases, tried after `targets`
    static_answer: str | None = None
    resume: bool = True  # a stream that breaks after content continues on the next target


@dataclass(frozen=True, slots=True)
class Principal:
    tenant: str
    key_id: str
    key_name: str | None = None
    user: str | None = None
    regions: tuple[str, ...] | None = None  # data residency: provider regions allowed; None = any
    priority: int = 0  # default priority of the key's calls in a saturated target's queue
    max_priority: int = 0  # the most a call may ask for with x-keel-priority
    team: str | None = None  # the key's team, as limits name it: "tenant:team"


Status = Literal["ok", "error", "partial"]


@dataclass(slots=True)
class TraceRecord:
    """One call, as stored. Mutable while the call runs; frozen in spirit once emitted."""

    id: str
    started_at: float  # unix seconds
    endpoint: str = "chat"
    tenant: str | None = None
    key_id: str | None = None
    user: str | None = None
    feature: str | None = None
    session: str | None = None
    tags: JSON = field(default_factory=dict)
    alias: str | None = None
    provider: str | None = None
    model: str | None = None
    request: JSON | None = None
    response: JSON | None = None
    status: Status = "ok"
    error_kind: str | None = None
    error_message: str | None = None
    http_status: int = 200
    input_tokens: int | None = None
    cached_input_tokens: int | None = None
    cache_write_tokens: int | None = None
    output_tokens: int | None = None
    reasoning_tokens: int | None = None
    cost_usd: float | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    attempts: int = 0
    overhead_ms: float | None = None
    stream: bool = False
    route: JSON | None = None  # the routing decision: rule, candidates, skipped and why
    attempt_log: list[JSON] | None = None  # every attempt: target, outcome, error kind, ms
    fallback: str | None = None  # which level served: primary, target, alias:<name>, static
    prompt_version: str | None = None  # header x-keel-prompt-version, else tag prompt_version
    cache: str | None = None  # hit | semantic | stale | miss | partial (embeddings); None: could not use it
    cache_saved_usd: float | None = None  # what a cache hit saved: the cost of the answer it reused
    payload_blob: str | None = None  # blob store key holding request and response (then None here)
    # W3C trace context of the caller (traceparent/tracestate), so the exported span joins its trace.
    # Not stored in the database; only the OpenTelemetry export reads them.
    otel_trace_id: str | None = None  # 32 lowercase hex
    otel_parent_span_id: str | None = None  # 16 lowercase hex
    otel_tracestate: str | None = None


SpanKind = Literal["model", "retrieval", "tool", "approval", "score", "job"]
SPAN_KINDS: tuple[SpanKind, ...] = ("model", "retrieval", "tool", "approval", "score", "job")


@dataclass(frozen=True, slots=True)
class Span:
    """One step of a trace below its call: an upstream attempt, a retrieval, a tool call, an approval,
    a score, a job. The call itself is the trace row (`TraceRecord`); its span id is the record id, so
    a span directly under the call has `parent_id == trace_id`. Append-only, idempotent by
    (trace_id, span_id). A span's usage and cost are its own part of the call's, never added to them:
    the call row already holds the totals.
    """

    trace_id: str  # the call record's id
    span_id: str  # unique within the trace
    parent_id: str | None  # the parent span's id (the trace id for the call span); None: a root
    kind: SpanKind
    name: str
    started_at: float  # unix seconds
    ended_at: float | None = None
    status: Status = "ok"
    tenant: str | None = None  # the call's tenant: isolation and purge
    attributes: JSON = field(default_factory=dict)  # bounded when stored (keel.store.storable)
    usage: Usage | None = None
    cost_usd: float | None = None
    # The caller's W3C trace id when it sent a traceparent, so an exported child joins the call's trace.
    # Not stored; only the OpenTelemetry export reads it.
    otel_trace_id: str | None = None
