"""The admin API's OpenAPI document describes what the handlers accept (tools, agents, a collection's
chunking and reranker): the closed schemas name exactly the models' fields, and full tool specs of each
kind, as a client would send them, validate against the document. The document is hand-written, so a
field added to a model without it fails here (a tool's http `query`, `network`, `limits`, a secret's
`format` and chunking's `strategy` were missing)."""

from __future__ import annotations

from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
from pydantic import BaseModel

from keel.agents.definitions import AgentSpec
from keel.agents.tools import CodeTool, HttpTool, McpTool, SecretUse, ToolLimits, ToolSpec
from keel.api.openapi.agents import AGENT_SPEC, CODE_TOOL, HTTP_TOOL, MCP_TOOL, TOOL_COMMON, TOOL_SPEC
from keel.api.openapi.rag import CHUNKING_IN, RERANK
from keel.rag.chunk import STRATEGIES, ChunkingSpec
from keel.rag.rerank import RerankSpec

KIND_FIELDS = {"name", "kind", "http", "code", "mcp"}


def props(schema: dict[str, Any]) -> set[str]:
    if "anyOf" in schema:
        [schema] = [s for s in schema["anyOf"] if s.get("type") != "null"]
    if schema.get("type") == "array":
        return props(schema["items"])
    assert schema.get("additionalProperties") is False, "a closed schema: unknown fields are refused"
    return set(schema["properties"])


@pytest.mark.parametrize(
    ("schema", "model"),
    [
        (HTTP_TOOL, HttpTool),
        (CODE_TOOL, CodeTool),
        (MCP_TOOL, McpTool),
        (TOOL_COMMON["limits"], ToolLimits),
        (TOOL_COMMON["secrets"], SecretUse),
    ],
)
def test_each_closed_schema_names_the_models_fields(schema: dict[str, Any], model: type[BaseModel]) -> None:
    assert props(schema) == set(model.model_fields)


def test_agent_and_rag_settings_name_the_fields_their_parsers_take() -> None:
    assert props(AGENT_SPEC) - {"tenant"} == set(AgentSpec.model_fields)
    assert props(CHUNKING_IN) == set(ChunkingSpec.__dataclass_fields__)
    assert tuple(CHUNKING_IN["properties"]["strategy"]["enum"]) == STRATEGIES
    assert props(RERANK) == set(RerankSpec.__dataclass_fields__)


def test_the_common_fields_are_the_specs_fields() -> None:
    assert set(TOOL_COMMON) - {"tenant"} | KIND_FIELDS == set(ToolSpec.model_fields)  # tenant: the API's


FULL = {
    "description": "d",
    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
    "timeout_s": 5,
    "max_output": 4096,
    "rate_per_minute": 10,
    "limits": {"rpm": 5, "calls_day": 100, "usd_day": 1.5, "usd_per_call": 0.01},
    "policy": {"default": "approve"},
}
SPECS = [
    {
        "name": "h",
        "kind": "http",
        "http": {"method": "GET", "url": "https://x.test/{q}", "query": ["q"]},
        "secrets": [{"name": "token", "header": "authorization", "format": "Bearer {value}"}],
    },
    {
        "name": "c",
        "kind": "code",
        "code": {"source": "print(1)", "cpus": 0.5, "network": ["api.x.test:443"]},
        "secrets": [{"name": "token", "env": "TOKEN"}],
    },
    {"name": "m", "kind": "mcp", "mcp": {"transport": "stdio", "command": ["srv"], "network": ["[::1]:8080"]}},
    {"name": "m2", "kind": "mcp", "mcp": {"transport": "http", "url": "http://127.0.0.1:9/mcp", "tool": "t"}},
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: str(s["name"]))
def test_a_full_spec_the_handler_accepts_validates_against_the_document(spec: dict[str, Any]) -> None:
    body = {**FULL, **spec}
    ToolSpec.model_validate(body)  # the handler's own check
    jsonschema.validate(body, TOOL_SPEC)
