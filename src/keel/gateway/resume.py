"""Resume after commit: what a stream that broke after content continues with on another target.

Two ways, chosen per target by the failover stage. A target that accepts an assistant prefill
(Anthropic natively; OpenAI-compatible servers flagged in the catalog) gets the text so far as a
trailing assistant message and continues it. Any other target restarts the answer, and only what
comes after the text the client already has is forwarded — provided the restart repeats that text
exactly; if it does not, the stream ends with an explicit error (`Diverged`), as a break did before.
Only plain text is resumed: a reply that was emitting tool calls is not (decision 0014).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

from keel.errors import ErrorKind, ProviderError
from keel.types import PREFIX, ChatEvent, ChatRequest, Finish, Message, Reasoning, Start, Text, ToolCallDelta
from keel.wire.openai_chat import output_cap


class Diverged(ProviderError):
    """A restart did not repeat the text the client already has: the stream cannot continue there."""


def spent(request: ChatRequest, sent: str) -> bool:
    """Has `sent` already used the caller's output cap? Then nothing may follow it (this is also how a
    stream cut for running past its cap ends: such a cut is not resumed)."""
    cap = output_cap(request)
    return cap is not None and len(sent) // 4 >= cap


def with_prefill(request: ChatRequest, sent: str) -> ChatRequest:
    """`request` asking to continue `sent`: a trailing assistant message, without the trailing whitespace
    Anthropic refuses (the continuation brings it back; `continuation` skips what the client has). The
    output cap is lowered by what was sent (characters / 4: under the true count, so never too low)."""
    prefill = Message("assistant", sent.rstrip(), extra={PREFIX: True})
    messages = (*request.messages, prefill)
    cap = output_cap(request)
    if cap is None:
        return replace(request, messages=messages)
    left = max(1, cap - len(sent) // 4)
    extra = {**request.extra, "max_completion_tokens": left} if "max_completion_tokens" in request.extra else None
    max_tokens = left if request.max_tokens is not None else None
    return replace(request, messages=messages, max_tokens=max_tokens, extra=extra or request.extra)


def continuation(
    events: AsyncIterator[ChatEvent], expect: str, strict: bool, broke: ProviderError, target: str
) -> AsyncIterator[ChatEvent]:
    """A resumed attempt's events without what the client already has.

    The client has seen the role chunk, so Start is dropped, as is thinking before the first text (the
    client has the broken attempt's; a second train of thought would read as a repeat). Then text must begin with `expect`, which
    is skipped: strictly (a restart must repeat the text sent, or it `Diverged`), or as far as it
    matches (after a prefill, the trailing whitespace the prefill left out may or may not come back).
    """
    # The break's kind and words, not the error itself: its traceback would tie this generator to the reply.
    return _continuation(events, expect, strict, (broke.error_kind, broke.message, broke.provider), target)


Why = tuple[ErrorKind, str, str]  # what broke the stream: kind, message, provider


async def _continuation(
    events: AsyncIterator[ChatEvent], expect: str, strict: bool, broke: Why, target: str
) -> AsyncIterator[ChatEvent]:
    matched, texted = 0, False
    try:
        async for event in events:
            if isinstance(event, Start) or (isinstance(event, Reasoning) and not texted):
                continue
            texted = texted or isinstance(event, Text)
            if matched < len(expect):
                if isinstance(event, Text):
                    text = event.text
                    same = _common(text, expect, matched)
                    matched += same
                    if same < len(text) and matched < len(expect):
                        if strict:
                            raise _diverged(broke, target, len(expect))
                        matched = len(expect)  # the continuation went its own way: forward it as it is
                    if same == len(text):
                        continue
                    event = Text(text[same:])
                elif strict and isinstance(event, ToolCallDelta | Finish):
                    raise _diverged(broke, target, len(expect))
                elif not strict:
                    matched = len(expect)
            yield event
        if strict and matched < len(expect):
            raise _diverged(broke, target, len(expect))
    finally:
        closer = getattr(events, "aclose", None)
        if closer is not None:
            await closer()


def _common(text: str, expect: str, at: int) -> int:
    """How many leading characters of `text` equal `expect` from position `at`."""
    n = min(len(text), len(expect) - at)
    if text[:n] == expect[at : at + n]:
        return n
    i = 0
    while i < n and text[i] == expect[at + i]:
        i += 1
    return i


def _diverged(broke: Why, target: str, sent: int) -> Diverged:
    kind, message, provider = broke
    message = f"{message}; resuming on {target} failed: its restart did not repeat the {sent} characters sent"
    return Diverged(kind, message, provider=provider)
