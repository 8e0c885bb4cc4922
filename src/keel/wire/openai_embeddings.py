"""The OpenAI embeddings body: parse a request, render a response. Pure, like every codec here;
the HTTP edge and Keel's own callers (async calls, batch lines) share it."""

from __future__ import annotations

import binascii
import struct
from typing import Any

from keel.errors import InvalidRequest
from keel.types import EmbeddingRequest, EmbeddingResponse
from keel.wire.openai_chat import require_model


def parse_embedding_request(body: Any) -> EmbeddingRequest:
    model = require_model(body)
    raw = body.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not inputs or not all(isinstance(s, str) for s in inputs):
        raise InvalidRequest("'input' must be a string or a non-empty array of strings.", "input")
    if body.get("encoding_format", "float") not in ("float", "base64"):
        raise InvalidRequest("'encoding_format' must be 'float' or 'base64'.", "encoding_format")
    # Keel always asks upstreams for floats and encodes for the client itself.
    extra = {k: v for k, v in body.items() if k not in ("model", "input", "encoding_format")}
    return EmbeddingRequest(model, tuple(inputs), extra)


def embedding_json(e: EmbeddingResponse, model: str, base64: bool) -> dict[str, Any]:
    """The response body; `base64`: the vectors as little-endian float32, as the client asked."""
    data = [{"object": "embedding", "index": i, "embedding": _vector_json(v, base64)} for i, v in enumerate(e.vectors)]
    usage = {"prompt_tokens": e.usage.input_tokens, "total_tokens": e.usage.input_tokens}
    return {"object": "list", "data": data, "model": e.model or model, "usage": usage}


def _vector_json(vector: tuple[float, ...], base64: bool) -> list[float] | str:
    if not base64:
        return list(vector)
    return binascii.b2a_base64(struct.pack(f"<{len(vector)}f", *vector), newline=False).decode()
