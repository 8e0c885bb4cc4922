"""The sandbox for code tools and stdio MCP servers: bubblewrap, seccomp, rlimits, a wall clock.

Never a fallback to running unsandboxed: where bubblewrap, user namespaces or libseccomp are missing,
`Sandbox.check()` and every run raise `SandboxUnavailable` naming what to install or enable.
"""

from keel.agents.sandbox.runner import Limits, Outcome, Sandbox, SandboxUnavailable

__all__ = ["Limits", "Outcome", "Sandbox", "SandboxUnavailable"]
