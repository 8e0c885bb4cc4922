"""`keel tools import-openapi`: http tools from an OpenAPI 3 document's operations (path, query and JSON
body parameters into one schema; local $refs inlined), called in a run against the fake upstream, which
records the path, query and body each call arrived with."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from keel.agents.openapi import OpenApiError, tools_from_openapi
from keel.agents.tools import parse_spec
from keel.testing import FakeUpstream
from keel.testing.fake_upstream import Script

from ..conftest import Gateway
from .test_runs import admin, agw, completion, keyed  # noqa: F401  (fixtures and helpers)


def document(base: str) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "fake upstream", "version": "1"},
        "servers": [{"url": base}],
        "paths": {
            "/v1/models": {"get": {"operationId": "listModels", "summary": "the models"}},
            "/v1beta/models/{call}": {
                "parameters": [{"name": "call", "in": "path", "required": True, "schema": {"type": "string"}}],
                "post": {
                    "operationId": "generateContent",
                    "summary": "Gemini generateContent",
                    "parameters": [{"name": "key", "in": "query", "schema": {"type": "string"}}],
                    "requestBody": {"$ref": "#/components/requestBodies/Generate"},
                },
            },
            "/v1/chat/completions": {
                "post": {
                    "operationId": "createChatCompletion",
                    "parameters": [{"name": "X-Trace", "in": "header", "schema": {"type": "string"}}],
                }
            },
        },
        "components": {
            "requestBodies": {
                "Generate": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/GenerateRequest"}}},
                }
            },
            "schemas": {
                "GenerateRequest": {
                    "type": "object",
                    "required": ["contents"],
                    "properties": {"contents": {"type": "array", "items": {"$ref": "#/components/schemas/Content"}}},
                },
                "Content": {
                    "type": "object",
                    "properties": {
                        "role": {"type": "string"},
                        "parts": {
                            "type": "array",
                            "items": {"type": "object", "properties": {"text": {"type": "string"}}},
                        },
                        "next": {"$ref": "#/components/schemas/Content"},  # a cycle: cut to any value
                    },
                },
            },
        },
    }


def keel(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KEEL_CONFIG"}
    return subprocess.run([sys.executable, "-m", "keel.cli.main", *args], cwd=tmp, capture_output=True, text=True,
                          timeout=60, env=env)  # fmt: skip


def test_imported_operations_run_against_the_fake_upstream(agw: Gateway, up: FakeUpstream, tmp_path: Path) -> None:  # noqa: F811
    doc = tmp_path / "api.json"
    doc.write_text(json.dumps(document(up.url)))
    refused = keel(tmp_path, "tools", "import-openapi", "t1", str(doc))
    assert refused.returncode == 1 and "createChatCompletion: parameter 'X-Trace' in header" in refused.stderr
    missing = keel(tmp_path, "tools", "import-openapi", "t1", str(doc), "--only", "listModels,nope")
    assert missing.returncode == 1 and "no operation named nope" in missing.stderr
    done = keel(tmp_path, "tools", "import-openapi", "t1", str(doc), "--only", "listModels,generateContent")
    print(done.stdout)
    assert done.returncode == 0, done.stderr
    assert "imported generateContent: POST " in done.stdout and "(policy approve)" in done.stdout
    assert "imported listModels: GET " in done.stdout and "(policy allow)" in done.stdout
    with admin(agw) as a:
        gen = a.get("/api/agents/tools/generateContent", params={"tenant": "t1"}).json()
        # the run should not wait for a person here: allow the write
        body = {"tenant": "t1", "name": "generateContent", **{k: v for k, v in gen.items() if k not in ("tenant", "name", "updated_at")}}  # fmt: skip
        body["policy"] = {"default": "allow"}
        r = a.post("/api/agents/tools", json=body)
        assert r.status_code == 200, r.text  # replaced
    params = gen["parameters"]
    assert params["required"] == ["call", "contents"]
    assert set(params["properties"]) == {"call", "key", "contents"}
    assert params["properties"]["contents"]["items"]["properties"]["next"] == {}

    contents = [{"role": "user", "parts": [{"text": "hello"}]}]
    gen_args = {"call": "gemini-2.0-flash:generateContent", "key": "k-123", "contents": contents}
    up.script(
        Script(body_override=completion(("c1", "listModels", {}), ("c2", "generateContent", gen_args))),
        Script(),  # GET /v1/models
        Script(text="gemini says hi"),  # the generateContent call
        Script(text="done"),
    )
    with keyed(agw) as k:
        r = k.post("/api/agents/runs", json={"model": "gpt-4o-mini", "input": "go",
                                             "tools": ["listModels", "generateContent"]})  # fmt: skip
    run = r.json()
    assert run["state"] == "done", run
    calls = {q["path"]: q for q in up.requests}
    assert "/v1/models" in calls
    gem = calls["/v1beta/models/gemini-2.0-flash:generateContent"]
    assert gem["query"] == {"key": "k-123"}  # a query parameter, though the method is POST
    assert gem["json"] == {"contents": contents}  # only the body's properties in the body
    with admin(agw) as a:
        steps = a.get(f"/api/agents/runs/{run['id']}").json()["steps"]
    results = {s["tool"]: s for s in steps if s["kind"] == "tool"}
    assert results["generateContent"]["state"] == "done" and "gemini says hi" in results["generateContent"]["result"]
    assert results["listModels"]["state"] == "done"


def test_documents_that_cannot_become_tools_say_why() -> None:
    with pytest.raises(OpenApiError, match="OpenAPI 3"):
        tools_from_openapi({"swagger": "2.0"})
    with pytest.raises(OpenApiError, match="--base-url"):
        tools_from_openapi({"openapi": "3.0.0", "paths": {}})
    text = {"openapi": "3.0.0", "servers": [{"url": "http://127.0.0.1:9"}], "paths": {"/up": {"post": {
        "operationId": "upload", "requestBody": {"content": {"text/plain": {"schema": {"type": "string"}}}}}}}}  # fmt: skip
    with pytest.raises(OpenApiError, match="upload: a request body of"):
        tools_from_openapi(text)
    named = {"openapi": "3.0.0", "paths": {"/items/{id}": {"delete": {}}}}
    (spec,) = tools_from_openapi(named, base_url="http://127.0.0.1:9/api/", writes="deny")
    parsed = parse_spec(spec)
    assert parsed.name == "delete_items_id" and parsed.policy.default == "deny"
    assert parsed.http is not None and parsed.http.url == "http://127.0.0.1:9/api/items/{id}"
    assert parsed.parameters == {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}
