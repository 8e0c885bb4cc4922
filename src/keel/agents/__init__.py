"""Agents: a tool runtime (registry, sandbox, secrets, policy and approvals, the loop) and MCP both ways."""
