"""Known upstreams as data. A provider that speaks a known wire format is a row, not a module.

`quirks` is a closed set; a codec reads the flags it knows:
- no_stream_options: the server rejects `stream_options`; usage is not requested in streams
- azure_deployments: URL is /openai/deployments/{model}/... with `api-version` query
- continue_final_message: the server continues a trailing assistant message when asked with
  `continue_final_message: true, add_generation_prompt: false` (vLLM)
- prefix_message: the server continues a trailing assistant message marked `"prefix": true` (Mistral)
- top_k: the server takes a `top_k` sampling parameter (an Anthropic client's reaches it; else dropped)
- reasoning_effort: the server takes `reasoning_effort` (an Anthropic client's `thinking` maps to it)
`endpoints` names the routes Keel passes through as they are (keel.api.forward) because the upstream
offers them: completions (legacy; others are mapped to chat), moderations, rerank, count_tokens.
`schema_models` are the model id prefixes that take native structured output (Anthropic's
`output_config.format`); other models get `response_format` as a forced tool call.
The prefill quirks (continue_final_message, prefix_message), and the Anthropic wire, accept an assistant prefill: a stream that broke after content
resumes on them by continuing its text (gateway/resume.py) instead of restarting it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Wire = Literal["openai_chat", "openai_responses", "anthropic_messages", "gemini", "bedrock_converse", "simulated"]
# aws-sigv4: requests are signed per request (AWS keys); a configured `api_key` is sent as a bearer token
Auth = Literal["bearer", "api-key", "x-api-key", "x-goog-api-key", "aws-sigv4", "none"]
Quirk = Literal[
    "no_stream_options", "azure_deployments", "continue_final_message", "prefix_message", "top_k", "reasoning_effort"
]
Endpoint = Literal["completions", "moderations", "rerank", "count_tokens"]
# Claude models with structured outputs (`output_config.format`), from Anthropic's structured-outputs docs
ANTHROPIC_SCHEMA_MODELS = (
    "claude-opus-4-7",
    "claude-opus-4-6",
    "claude-sonnet-4-6",
    "claude-opus-4-5",
    "claude-sonnet-4-5",
    "claude-haiku-4-5",
    "claude-opus-4-1",
)
PREFILL_QUIRKS: frozenset[Quirk] = frozenset({"continue_final_message", "prefix_message"})


@dataclass(frozen=True, slots=True)
class CatalogRow:
    wire: Wire
    base_url: str | None
    auth: Auth
    key_env: str | None
    quirks: frozenset[Quirk] = frozenset()
    endpoints: frozenset[Endpoint] = frozenset()
    schema_models: tuple[str, ...] = ()

    @property
    def prefill(self) -> bool:
        """Does the upstream continue a trailing assistant message (an assistant prefill)?"""
        return self.wire == "anthropic_messages" or not self.quirks.isdisjoint(PREFILL_QUIRKS)


CATALOG: dict[str, CatalogRow] = {
    "openai": CatalogRow(
        "openai_chat",
        "https://api.openai.com/v1",
        "bearer",
        "OPENAI_API_KEY",
        frozenset({"reasoning_effort"}),
        frozenset({"completions", "moderations"}),
    ),
    # OpenAI through its Responses API (wire/openai_responses_upstream.py): the models served only there
    "openai-responses": CatalogRow(
        "openai_responses", "https://api.openai.com/v1", "bearer", "OPENAI_API_KEY", frozenset({"reasoning_effort"})
    ),
    "azure": CatalogRow(
        "openai_chat", None, "api-key", "AZURE_OPENAI_API_KEY", frozenset({"azure_deployments", "reasoning_effort"})
    ),
    "groq": CatalogRow(
        "openai_chat", "https://api.groq.com/openai/v1", "bearer", "GROQ_API_KEY", frozenset({"reasoning_effort"})
    ),
    "together": CatalogRow(
        "openai_chat",
        "https://api.together.xyz/v1",
        "bearer",
        "TOGETHER_API_KEY",
        frozenset({"top_k"}),
        frozenset({"completions", "rerank"}),
    ),
    "mistral": CatalogRow(
        "openai_chat",
        "https://api.mistral.ai/v1",
        "bearer",
        "MISTRAL_API_KEY",
        frozenset({"no_stream_options", "prefix_message"}),
    ),
    "deepseek": CatalogRow("openai_chat", "https://api.deepseek.com/v1", "bearer", "DEEPSEEK_API_KEY"),
    "fireworks": CatalogRow(
        "openai_chat",
        "https://api.fireworks.ai/inference/v1",
        "bearer",
        "FIREWORKS_API_KEY",
        frozenset({"top_k", "reasoning_effort"}),
        frozenset({"completions"}),
    ),
    "openrouter": CatalogRow(
        "openai_chat",
        "https://openrouter.ai/api/v1",
        "bearer",
        "OPENROUTER_API_KEY",
        frozenset({"top_k", "reasoning_effort"}),
        frozenset({"completions"}),
    ),
    "gemini": CatalogRow(
        "openai_chat",
        "https://generativelanguage.googleapis.com/v1beta/openai",
        "bearer",
        "GEMINI_API_KEY",
        frozenset({"reasoning_effort"}),
    ),
    "vllm": CatalogRow(
        "openai_chat",
        "http://127.0.0.1:8000/v1",
        "bearer",
        None,
        frozenset({"continue_final_message", "top_k"}),
        frozenset({"completions", "rerank"}),
    ),
    "ollama": CatalogRow(
        "openai_chat", "http://127.0.0.1:11434/v1", "none", None, endpoints=frozenset({"completions"})
    ),
    "tgi": CatalogRow("openai_chat", "http://127.0.0.1:8080/v1", "bearer", None),  # text-generation-inference
    "anthropic": CatalogRow(
        "anthropic_messages",
        "https://api.anthropic.com/v1",
        "x-api-key",
        "ANTHROPIC_API_KEY",
        endpoints=frozenset({"count_tokens"}),
        schema_models=ANTHROPIC_SCHEMA_MODELS,
    ),
    "google": CatalogRow(
        "gemini", "https://generativelanguage.googleapis.com/v1beta", "x-goog-api-key", "GEMINI_API_KEY"
    ),
    # {region}: the provider's aws_region (or AWS_REGION); the key variable holds a Bedrock API key
    "bedrock": CatalogRow(
        "bedrock_converse", "https://bedrock-runtime.{region}.amazonaws.com", "aws-sigv4", "AWS_BEARER_TOKEN_BEDROCK"
    ),
    "simulated": CatalogRow("simulated", None, "none", None),
}
