"""Known upstreams as data. A provider that speaks a known wire format is a row, not a module.

`quirks` is a closed set; a codec reads the flags it knows:
- no_stream_options: the server rejects `stream_options`; usage is not requested in streams
- azure_deployments: URL is /openai/deployments/{model}/... with `api-version` query
- continue_final_message: the server continues a trailing assistant message when asked with
  `continue_final_message: true, add_generation_prompt: false` (vLLM)
- prefix_message: the server continues a trailing assistant message marked `"prefix": true` (Mistral)
The last two, and the Anthropic wire, accept an assistant prefill: a stream that broke after content
resumes on them by continuing its text (gateway/resume.py) instead of restarting it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Wire = Literal["openai_chat", "anthropic_messages", "simulated"]
Auth = Literal["bearer", "api-key", "x-api-key", "none"]
Quirk = Literal["no_stream_options", "azure_deployments", "continue_final_message", "prefix_message"]
PREFILL_QUIRKS: frozenset[Quirk] = frozenset({"continue_final_message", "prefix_message"})


@dataclass(frozen=True, slots=True)
class CatalogRow:
    wire: Wire
    base_url: str | None
    auth: Auth
    key_env: str | None
    quirks: frozenset[Quirk] = frozenset()

    @property
    def prefill(self) -> bool:
        """Does the upstream continue a trailing assistant message (an assistant prefill)?"""
        return self.wire == "anthropic_messages" or not self.quirks.isdisjoint(PREFILL_QUIRKS)


CATALOG: dict[str, CatalogRow] = {
    "openai": CatalogRow("openai_chat", "https://api.openai.com/v1", "bearer", "OPENAI_API_KEY"),
    "azure": CatalogRow("openai_chat", None, "api-key", "AZURE_OPENAI_API_KEY", frozenset({"azure_deployments"})),
    "groq": CatalogRow("openai_chat", "https://api.groq.com/openai/v1", "bearer", "GROQ_API_KEY"),
    "together": CatalogRow("openai_chat", "https://api.together.xyz/v1", "bearer", "TOGETHER_API_KEY"),
    "mistral": CatalogRow(
        "openai_chat",
        "https://api.mistral.ai/v1",
        "bearer",
        "MISTRAL_API_KEY",
        frozenset({"no_stream_options", "prefix_message"}),
    ),
    "deepseek": CatalogRow("openai_chat", "https://api.deepseek.com/v1", "bearer", "DEEPSEEK_API_KEY"),
    "fireworks": CatalogRow("openai_chat", "https://api.fireworks.ai/inference/v1", "bearer", "FIREWORKS_API_KEY"),
    "openrouter": CatalogRow("openai_chat", "https://openrouter.ai/api/v1", "bearer", "OPENROUTER_API_KEY"),
    "gemini": CatalogRow(
        "openai_chat", "https://generativelanguage.googleapis.com/v1beta/openai", "bearer", "GEMINI_API_KEY"
    ),
    "vllm": CatalogRow(
        "openai_chat", "http://127.0.0.1:8000/v1", "bearer", None, frozenset({"continue_final_message"})
    ),
    "ollama": CatalogRow("openai_chat", "http://127.0.0.1:11434/v1", "none", None),
    "tgi": CatalogRow("openai_chat", "http://127.0.0.1:8080/v1", "bearer", None),  # text-generation-inference
    "anthropic": CatalogRow("anthropic_messages", "https://api.anthropic.com/v1", "x-api-key", "ANTHROPIC_API_KEY"),
    "simulated": CatalogRow("simulated", None, "none", None),
}
