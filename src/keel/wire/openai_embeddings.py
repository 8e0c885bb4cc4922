"""The OpenAI embeddings body: parse a request, render a response. Pure, like every codec here;
the HTTP edge and Keel's own callers (async calls, batch lines) share it."""

from __future__ import annotations

import binascii
import struct
from typing import Any

from keel.errors import InvalidRequest
from keel.types import EmbeddingRequest, EmbeddingResponse
from keel.wire.openai_chat import require_model

_INPUT_SHAPES = "a string, an array of strings, an array of token ids, or an array of token-id arrays"


def parse_embedding_request(body: Any) -> EmbeddingRequest:
    """Text inputs, or token arrays (`[1, 2]`, `[[1, 2], [3]]`: what LangChain's OpenAIEmbeddings sends),
    which reach OpenAI-compatible upstreams as arrays of token arrays."""
    model = require_model(body)
    raw = body.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not inputs:
        raise InvalidRequest(f"'input' must be {_INPUT_SHAPES}, and not empty.", "input")
    if body.get("encoding_format", "float") not in ("float", "base64"):
        raise InvalidRequest("'encoding_format' must be 'float' or 'base64'.", "encoding_format")
    # Keel always asks upstreams for floats and encodes for the client itself.
    extra = {k: v for k, v in body.items() if k not in ("model", "input", "encoding_format")}
    if all(isinstance(s, str) for s in inputs):
        return EmbeddingRequest(model, tuple(inputs), extra)
    return EmbeddingRequest(model, (), extra, tokens=_token_arrays(inputs))


def _token_arrays(inputs: list[Any]) -> tuple[tuple[int, ...], ...]:
    arrays = [inputs] if all(_token(t) for t in inputs) else inputs
    if not all(isinstance(a, list) and a and all(_token(t) for t in a) for a in arrays):
        raise InvalidRequest(f"'input' must be {_INPUT_SHAPES} (non-negative integers, no empty array).", "input")
    return tuple(tuple(a) for a in arrays)


def _token(value: Any) -> bool:
    return type(value) is int and value >= 0


def embedding_json(e: EmbeddingResponse, model: str, base64: bool) -> dict[str, Any]:
    """The response body; `base64`: the vectors as little-endian float32, as the client asked."""
    data = [{"object": "embedding", "index": i, "embedding": _vector_json(v, base64)} for i, v in enumerate(e.vectors)]
    usage = {"prompt_tokens": e.usage.input_tokens, "total_tokens": e.usage.input_tokens}
    return {"object": "list", "data": data, "model": e.model or model, "usage": usage}


def _vector_json(vector: tuple[float, ...], base64: bool) -> list[float] | str:
    if not base64:
        return list(vector)
    return binascii.b2a_base64(struct.pack(f"<{len(vector)}f", *vector), newline=False).decode()
