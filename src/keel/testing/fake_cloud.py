"""Wire bodies of the fake upstream for Google's Gemini API and Amazon Bedrock's Converse API.

Written from the providers' public references (Gemini `generateContent` REST reference; the Bedrock
Runtime API reference; the AWS event-stream encoding and Signature Version 4 specifications) and,
like fake_wire, independent of Keel's codecs and signer, so a bug there is not cancelled by the
same bug here. Pure functions, no I/O. The fake answers with the same `Answer` as the other formats.

Bedrock requests must be signed with `AWS_KEYS` (SigV4, service `bedrock`) or carry `BEDROCK_API_KEY`
as a bearer token; `check_aws_auth` recomputes the signature and names what is wrong.
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import hmac
import json
import struct
import time
import urllib.parse
import zlib
from dataclasses import dataclass
from typing import Any

from .fake_wire import TOOL_ARGUMENTS, Answer, Frame, Json, new_id, pieces

AWS_KEYS = {"AKIDFAKEKEELTESTING1": "fake+secret/keel/testing/not-a-real-key"}
BEDROCK_API_KEY = "bedrock-api-key-fake-keel-testing"
EVENTSTREAM = "application/vnd.amazon.eventstream"


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(_text(v) for v in value)
    if isinstance(value, dict):
        return "".join(_text(v) for k, v in value.items() if k in ("text", "parts", "content", "toolResult"))
    return ""


# --- Gemini ---------------------------------------------------------------------------------


def gemini_as_chat(body: Json, model: str) -> Json:
    """A GenerateContentRequest in the shape `fake_wire.plan` reads (roles, text, first tool name)."""
    messages = [
        {"role": "assistant" if c.get("role") == "model" else "user", "content": _text(c.get("parts"))}
        for c in body.get("contents") or []
        if isinstance(c, dict)
    ]
    declarations = [d for t in body.get("tools") or [] for d in t.get("functionDeclarations") or []]
    return {
        "model": model,
        "system": _text((body.get("systemInstruction") or {}).get("parts")),
        "messages": messages,
        "tools": [{"name": d.get("name")} for d in declarations],
    }


def _gemini_usage(a: Answer) -> Json:
    u = a.usage
    usage = {
        "promptTokenCount": u["prompt_tokens"],
        "candidatesTokenCount": u["completion_tokens"] - u["reasoning_tokens"],
        "totalTokenCount": u["prompt_tokens"] + u["completion_tokens"],
    }
    if u["cached_tokens"]:
        usage["cachedContentTokenCount"] = u["cached_tokens"]
    if u["reasoning_tokens"]:
        usage["thoughtsTokenCount"] = u["reasoning_tokens"]
    return {**usage, **(a.bad_usage or {})}


def _gemini_chunk(a: Answer, rid: str, parts: list[Json], finish: str | None) -> Json:
    candidate: Json = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    return {"candidates": [candidate], "usageMetadata": _gemini_usage(a), "modelVersion": a.model, "responseId": rid}


def thought_signature(name: str) -> str:
    """The opaque signature the fake puts on a function call part (Gemini 3 wants it back next turn)."""
    return base64.b64encode(hashlib.sha256(b"fake-thought:" + name.encode()).digest()).decode()


def _gemini_parts(a: Answer) -> list[Json]:
    if a.tool_name:
        call = {"name": a.tool_name, "args": json.loads(TOOL_ARGUMENTS)}
        return [{"functionCall": call, "thoughtSignature": thought_signature(a.tool_name)}]
    return [{"text": a.text}]


def gemini_response(a: Answer) -> Json:
    return _gemini_chunk(a, new_id(""), _gemini_parts(a), "STOP")


def gemini_frames(a: Answer) -> list[Frame]:
    """`streamGenerateContent?alt=sse`: one chunk per piece; the last carries finishReason. A function
    call comes whole, in one chunk (Gemini does not stream arguments)."""
    rid = new_id("")
    content = [[p] for p in _gemini_parts(a)] if a.tool_name else [[{"text": p}] for p in pieces(a.text)]
    frames = [Frame("content", json.dumps(_gemini_chunk(a, rid, parts, None))) for parts in content]
    return [*frames, Frame("tail", json.dumps(_gemini_chunk(a, rid, [{"text": ""}], "STOP")))]


def gemini_embeddings(body: Json) -> Json:
    """`batchEmbedContents`: one 8-dimension vector per request, from a hash of its text (no usage:
    Gemini reports none for embeddings)."""
    vectors = []
    for one in body.get("requests") or []:
        digest = hashlib.sha256(_text((one or {}).get("content")).encode()).digest()
        vectors.append(
            {"values": [round(int.from_bytes(digest[4 * i : 4 * i + 4], "big") / 2**31 - 1, 6) for i in range(8)]}
        )
    return {"embeddings": vectors}


_GEMINI_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND"}
_GEMINI_STATUS |= {429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


def gemini_error(status: int, code: str | None) -> Json:
    name = _GEMINI_STATUS.get(status, "INTERNAL" if status >= 500 else "INVALID_ARGUMENT")
    message = {
        "INVALID_ARGUMENT": "Request contains an invalid argument.",
        "RESOURCE_EXHAUSTED": "Resource has been exhausted (e.g. check quota).",
        "UNAVAILABLE": "The model is overloaded. Please try again later.",
    }.get(name, f"Error {status}.")
    details: list[Json] = []
    if code == "context_length_exceeded":
        message = "The input token count (1048577) exceeds the maximum number of tokens allowed (1048576)."
    elif code == "API_KEY_INVALID":
        message = "API key not valid. Please pass a valid API key."
        details.append({"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"})
    if status == 429:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"})
    error: Json = {"code": status, "message": message, "status": name}
    return {"error": error | ({"details": details} if details else {})}


# --- Bedrock Converse -----------------------------------------------------------------------


def converse_as_chat(body: Json, model: str) -> Json:
    messages = [
        {"role": m.get("role"), "content": _text(m.get("content"))}
        for m in body.get("messages") or []
        if isinstance(m, dict)
    ]
    tools = [t.get("toolSpec") or {} for t in (body.get("toolConfig") or {}).get("tools") or []]
    return {"model": model, "system": _text(body.get("system")), "messages": messages, "tools": tools}


def _converse_usage(a: Answer) -> Json:
    u = a.usage
    fresh = max(u["prompt_tokens"] - u["cached_tokens"] - u["cache_creation_tokens"], 0)
    usage = {
        "inputTokens": fresh,
        "outputTokens": u["completion_tokens"],
        "totalTokens": u["prompt_tokens"] + u["completion_tokens"],
    }
    if u["cached_tokens"]:
        usage["cacheReadInputTokens"] = u["cached_tokens"]
    if u["cache_creation_tokens"]:
        usage["cacheWriteInputTokens"] = u["cache_creation_tokens"]
    return {**usage, **(a.bad_usage or {})}


def converse_response(a: Answer) -> Json:
    if a.tool_name:
        use = {"toolUseId": new_id("tooluse_"), "name": a.tool_name, "input": json.loads(TOOL_ARGUMENTS)}
        content: list[Json] = [{"toolUse": use}]
    else:
        content = [{"text": a.text}]
    return {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": "tool_use" if a.tool_name else "end_turn",
        "usage": _converse_usage(a),
        "metrics": {"latencyMs": 1},
    }


def eventstream_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message with string headers: prelude, prelude CRC, headers, payload, CRC."""
    head = b"".join(
        struct.pack("!B", len(k)) + k.encode() + b"\x07" + struct.pack("!H", len(v.encode())) + v.encode()
        for k, v in headers.items()
    )
    total = 12 + len(head) + len(payload) + 4
    prelude = struct.pack("!II", total, len(head))
    prelude += struct.pack("!I", zlib.crc32(prelude))
    message = prelude + head + payload
    return message + struct.pack("!I", zlib.crc32(message))


@dataclass(frozen=True)
class EventFrame(Frame):
    """A ConverseStream event: `event` names its `:event-type`; it encodes to event-stream bytes."""

    message_type: str = "event"

    def encode(self) -> bytes:
        kind = ":exception-type" if self.message_type == "exception" else ":event-type"
        headers = {kind: self.event or "", ":content-type": "application/json", ":message-type": self.message_type}
        return eventstream_message(headers, self.data.encode())

    def malformed(self) -> Frame:
        return EventFrame(self.kind, '{"contentBlockIndex": 0, "delta": {"text": "unterminated', self.event)


def _event(kind: Any, name: str, payload: Json) -> EventFrame:
    return EventFrame(kind, json.dumps({**payload, "p": "abcdefghij"}), name)  # AWS pads payloads with "p"


def converse_frames(a: Answer) -> list[Frame]:
    frames: list[Frame] = [_event("head", "messageStart", {"role": "assistant"})]
    if a.tool_name:
        start = {"toolUse": {"toolUseId": new_id("tooluse_"), "name": a.tool_name}}
        frames.append(_event("head", "contentBlockStart", {"contentBlockIndex": 0, "start": start}))
        deltas: list[Json] = [{"toolUse": {"input": p}} for p in pieces(TOOL_ARGUMENTS)]
    else:
        deltas = [{"text": p} for p in pieces(a.text)]
    frames += [_event("content", "contentBlockDelta", {"contentBlockIndex": 0, "delta": d}) for d in deltas]
    return [
        *frames,
        _event("tail", "contentBlockStop", {"contentBlockIndex": 0}),
        _event("tail", "messageStop", {"stopReason": "tool_use" if a.tool_name else "end_turn"}),
        _event("end", "metadata", {"usage": _converse_usage(a), "metrics": {"latencyMs": 1}}),
    ]


_BEDROCK_ERRORS = {400: "ValidationException", 403: "AccessDeniedException", 404: "ResourceNotFoundException"}
_BEDROCK_ERRORS |= {408: "ModelTimeoutException", 424: "ModelErrorException", 429: "ThrottlingException"}
_BEDROCK_ERRORS |= {500: "InternalServerException", 503: "ServiceUnavailableException"}


def bedrock_error(status: int, code: str | None) -> tuple[str, Json]:
    """The exception name (for `x-amzn-errortype`) and the body of an error answer."""
    name = _BEDROCK_ERRORS.get(status, "InternalServerException" if status >= 500 else "ValidationException")
    message = {"ThrottlingException": "Too many requests, please wait before trying again."}.get(name, f"{name}.")
    if code == "context_length_exceeded":
        message = "Input is too long for requested model."
    elif code:
        name = code  # e.g. ModelNotReadyException
    return name, {"message": message}


def exception_frame(name: str, body: Json) -> EventFrame:
    return EventFrame("tail", json.dumps(body), name[:1].lower() + name[1:], "exception")


# --- SigV4 verification ---------------------------------------------------------------------


def check_aws_auth(method: str, raw_path: str, headers: dict[str, str], body: bytes, now: float) -> str | None:
    """None when the request is signed right with `AWS_KEYS` (or bears `BEDROCK_API_KEY`), else why not."""
    auth = headers.get("authorization", "")
    if auth.startswith("Bearer "):
        return None if auth[7:] == BEDROCK_API_KEY else "The API key is not valid."
    fields = dict(
        part.strip().split("=", 1) for part in auth.removeprefix("AWS4-HMAC-SHA256 ").split(",") if "=" in part
    )
    try:
        key_id, day, region, service, terminal = fields["Credential"].split("/")
        names, given = fields["SignedHeaders"].split(";"), fields["Signature"]
    except (KeyError, ValueError):
        return "Missing or malformed Authorization header."
    secret = AWS_KEYS.get(key_id)
    stamp = headers.get("x-amz-date", "")
    if secret is None:
        return "The security token included in the request is invalid."
    if service != "bedrock" or terminal != "aws4_request" or not stamp.startswith(day) or "host" not in names:
        return "Credential should be scoped to a valid date, region and service 'bedrock'."
    if abs(now - calendar.timegm(time.strptime(stamp, "%Y%m%dT%H%M%SZ"))) > 300:
        return "Signature expired."
    path, _, query = raw_path.partition("?")
    payload = hashlib.sha256(body).hexdigest()
    canonical_headers = "".join(f"{n}:{' '.join(headers.get(n, '').split())}\n" for n in names)
    canonical = "\n".join(
        [method, urllib.parse.quote(path, safe="/~"), query, canonical_headers, ";".join(names), payload]
    )
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret).encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest(), given):
        return "The request signature we calculated does not match the signature you provided."
    return None
