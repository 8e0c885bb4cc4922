"""The two provider interfaces, and the rules every codec applies to what an upstream sends.

`Codec` is pure: it turns Keel's types into one wire format's bytes and back, and classifies that
format's errors. It does no I/O, so it is tested on recorded payloads. `Provider` is what the
gateway calls; `HttpProvider` pairs a codec with the one pooled HTTP client for its host.

Upstream data is checked, not trusted: a 200 that is an error object or has no answer is an error;
token counts are clamped into [0, cap] (`counted`) and the clamp noted on the trace, so one broken
usage object can neither bill absurd sums nor break a store; a stream is complete when it says so
(a finish reason or its end marker), and one malformed event in it is skipped and noted, two fail it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from keel.errors import ErrorKind, InvalidRequest, ProviderError
from keel.types import ChatEvent, ChatRequest, EmbeddingRequest, EmbeddingResponse, Note, Target, Usage, UsageEvent

# Token counts beyond this are a broken upstream when the target's window is unknown: the largest
# context windows offered are ~10M tokens. A known window allows twice itself (prompt plus answer).
MAX_TOKENS = 10_000_000
USAGE_TAG = "keel.usage"  # "clamped: <what the upstream said>"; "estimated" when no usage came
MALFORMED_TAG = "keel.malformed_events"


class Oversized(ProviderError):
    """An answer past a size bound (stream bytes, tokens past max_tokens): another target may answer
    the request afresh, but no one continues this answer (the failover stage does not resume it)."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorKind.protocol, message)


@dataclass(frozen=True, slots=True)
class Outbound:
    """An HTTP request a codec wants sent: path relative to the provider's base URL, headers of this
    request only (beside the provider's own), and notes for the trace about the encoding (the fields
    it dropped), which the provider yields before the answer's events."""

    path: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    notes: tuple[Note, ...] = ()


class StreamDecoder(Protocol):
    done: bool  # the answer is complete: a finish reason or the format's end marker was seen

    def feed(self, data: bytes) -> list[ChatEvent]:
        """Decode one SSE `data` payload into zero or more events."""
        ...

    def close(self) -> list[ChatEvent]:
        """The body ended: the events still owed, or ProviderError(protocol) if the answer is incomplete."""
        ...


class Codec(Protocol):
    def encode_chat(self, request: ChatRequest, target: Target, stream: bool) -> Outbound: ...

    def decode_chat(self, body: bytes, cap: int = MAX_TOKENS) -> list[ChatEvent]:
        """The events of a whole answer; `cap` bounds each token count (see `token_cap`)."""
        ...

    def stream_decoder(self, cap: int = MAX_TOKENS) -> StreamDecoder: ...

    def encode_embed(self, request: EmbeddingRequest, target: Target) -> Outbound: ...

    def decode_embed(self, body: bytes) -> EmbeddingResponse: ...

    def classify(self, status: int, body: bytes, headers: Mapping[str, str]) -> ProviderError:
        """Turn a non-2xx upstream answer into a ProviderError with the right ErrorKind."""
        ...


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime
        from time import time

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time())
        except (TypeError, ValueError):
            return None


# ---- checks on what upstreams send ------------------------------------------------------------


def token_cap(target: Target) -> int:
    """The largest token count one call to `target` can honestly report."""
    window = target.context_window
    return MAX_TOKENS if window is None else 2 * window


def counted(value: Any, cap: int, name: str, problems: list[str]) -> int:
    """A token count as the upstream reported it if it is one (an int in [0, cap]; absent is 0), else
    clamped into that range with the problem noted: negative, non-integer, NaN or beyond `cap`."""
    if type(value) is int and 0 <= value <= cap:
        return value
    if value is None:
        return 0
    problems.append(f"{name}={str(value)[:24]}")
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return 0
    return int(max(0, min(value, cap)))


def usage_events(usage: Usage, problems: list[str]) -> list[ChatEvent]:
    """The usage, and a Note for the trace when any count had to be clamped."""
    if not problems:
        return [UsageEvent(usage)]
    return [UsageEvent(usage), Note(USAGE_TAG, "clamped: " + ", ".join(problems))]


def checked_usage(
    u: Any, cap: int, usage_from: Callable[[Mapping[str, Any], int, list[str]], Usage], name: str = "usage"
) -> list[ChatEvent]:
    """The events of a wire's usage object read by its `usage_from`; one that is not an object counts
    as zero, noted like any clamped count."""
    problems: list[str] = []
    if not isinstance(u, dict):
        problems.append(f"{name}={str(u)[:24]}")
        u = {}
    return usage_events(usage_from(u, cap, problems), problems)


def call_arguments(arguments: str, call_id: str, i: int) -> dict[str, Any]:
    """A tool call's arguments as the object the Anthropic, Gemini and Bedrock wires want: empty is `{}`;
    anything but a JSON object is a 400 naming the message (`i`) it came in."""
    try:
        value = orjson.loads(arguments) if arguments.strip() else {}
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise InvalidRequest(
            f"The arguments of tool call '{call_id}' must be a JSON object.", f"messages[{i}].tool_calls"
        )
    return value


class Malformed:
    """Counts a stream's malformed events: the first is skipped (and noted), the second fails the stream."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def skip(self, data: bytes, what: str) -> list[ChatEvent]:
        self.count += 1
        if self.count > 1:
            raise ProviderError(ErrorKind.protocol, f"{self.count} malformed {what}s, the last: {data[:80]!r}")
        return [Note(MALFORMED_TAG, str(self.count))]
