"""JSON views of tools, secrets, runs and tool calls, shared by the admin API and the CLI. A secret's view
has its name, key id and time: never its value."""

from __future__ import annotations

from typing import Any

from keel.store.protocols.agents import CallRow, RunRow, SecretRow, ToolRow


def tool_view(row: ToolRow) -> dict[str, Any]:
    return {"tenant": row.tenant, "name": row.name, **row.spec, "updated_at": row.updated_at}


def secret_view(row: SecretRow) -> dict[str, Any]:
    return {"tenant": row.tenant, "name": row.name, "key_id": row.key_id, "created_at": row.created_at}


def call_view(row: CallRow) -> dict[str, Any]:
    return {
        "id": row.id, "run_id": row.run_id, "tenant": row.tenant, "tool": row.tool, "arguments": row.arguments,
        "state": row.state, "result": row.result, "decided_by": row.decided_by, "expires_at": row.expires_at,
        "created_at": row.created_at, "updated_at": row.updated_at,
    }  # fmt: skip


def run_view(row: RunRow, full: bool = True) -> dict[str, Any]:
    d = row.data
    out = {
        "id": row.id, "tenant": row.tenant, "state": row.state, "model": d["model"], "tools": d["tools"],
        "answer": d.get("answer"), "error": d.get("error"), "cost_usd": d.get("cost_usd"),
        "trace_id": d.get("trace_id"), "pending": [p["call_id"] for p in d.get("pending", [])],
        "steps": len(d.get("steps", [])), "created_at": row.created_at, "updated_at": row.updated_at,
    }  # fmt: skip
    if full:
        out["steps"] = d.get("steps", [])
        out["messages"] = d.get("messages", [])
    return out


def step_tree(row: RunRow, calls: list[CallRow]) -> list[str]:
    """The run as an indented tree: each model step with its tool calls, approvals and results."""
    d = row.data
    by_id = {c.id: c for c in calls}
    lines = [
        f"run {row.id}  [{row.state}]  model={d['model']}  cost=${d.get('cost_usd') or 0:.6f}  trace={d.get('trace_id')}"
    ]
    first = next((m for m in d.get("messages", []) if m.get("role") == "user"), None)
    if first is not None:
        lines.append(f"  input: {str(first.get('content'))[:200]}")
    for s in d.get("steps", []):
        ms = (s["ended_at"] - s["started_at"]) * 1000
        if s["kind"] == "model":
            what = ", ".join(c["function"]["name"] for c in s.get("tool_calls", [])) or "answer"
            lines.append(f"  ├─ step {s['n']} model  {ms:7.1f} ms  tokens {s.get('input_tokens')}/{s.get('output_tokens')}"
                         f"  ${s.get('cost_usd') or 0:.6f}  -> {what}  (trace {s['trace_id']})")  # fmt: skip
            if s.get("content"):
                lines.append(f"  │    says: {str(s['content'])[:200]}")
            continue
        c = by_id.get(s["call_id"])
        approval = f"  approved by {c.decided_by}" if c is not None and c.decided_by not in (None, "policy") else ""
        lines.append(f"  │  └─ tool {s['tool']}  {ms:7.1f} ms  [{s['state']}]{approval}  args {s['arguments']}")
        lines.append(f"  │       result: {str(s['result'])[:200]}")
    for p in d.get("pending", []):
        c = by_id.get(p["call_id"])
        if c is not None and c.state == "pending":
            lines.append(
                f"  │  └─ tool {c.tool}  [awaiting approval: keel approvals approve {c.id}]  args {c.arguments}"
            )
    if d.get("answer") is not None:
        lines.append(f"  └─ answer: {str(d['answer'])[:500]}")
    if d.get("error"):
        lines.append(f"  └─ error: {d['error']}")
    return lines
