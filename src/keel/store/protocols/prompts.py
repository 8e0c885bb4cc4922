"""Prompts as versioned data: immutable versions per (tenant, name), and labels that point at them.

A version's content (`PromptContent`: messages, variables schema, alias, parameters, tools, response
format) is addressed by its hash: pushing content a prompt already has returns that version, so a
push is idempotent. Versions are numbered 1, 2, … per prompt and never change; labels move.

`PromptStore` is synchronous and thread-safe like every SQL store (decision 0001); keel.prompts reads
it off the event loop and serves calls from memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class PromptContent:
    """What a version is; every field is JSON. Two pushes of equal content are one version."""

    messages: tuple[dict[str, Any], ...]
    variables: dict[str, Any] | None = None  # a JSON schema for the variables object
    alias: str | None = None  # the model alias to call with (the call's own `model` overrides)
    params: dict[str, Any] | None = None  # temperature, max_tokens, …: defaults the call overrides
    tools: tuple[dict[str, Any], ...] = ()
    response_format: dict[str, Any] | None = None

    def json(self) -> dict[str, Any]:
        return {
            "messages": list(self.messages),
            "variables": self.variables,
            "alias": self.alias,
            "params": self.params,
            "tools": list(self.tools),
            "response_format": self.response_format,
        }


@dataclass(frozen=True, slots=True)
class PromptVersion:
    tenant: str
    name: str
    version: int
    hash: str  # sha256 of the content's canonical JSON
    content: PromptContent
    message: str | None  # the commit message
    author: str | None
    created_at: float


@dataclass(frozen=True, slots=True)
class PromptLabel:
    tenant: str
    name: str
    label: str
    version: int  # the stable version: every call not in a rollout's share
    protected: bool  # only the admin token moves it
    updated_at: float
    updated_by: str | None
    # A rollout: (version, percent of calls) pairs, the stable version taking the rest; () for none.
    rollout: tuple[tuple[int, float], ...] = ()


class PromptStore(Protocol):
    def push_prompt(
        self, tenant: str, name: str, content: PromptContent, hash: str, *, message: str | None, author: str | None,
        now: float,
    ) -> tuple[PromptVersion, bool]:  # fmt: skip
        """Store `content` as the prompt's next version, or find the version that has its `hash`;
        True when it is new."""
        ...

    def get_prompt_version(self, tenant: str, name: str, version: int) -> PromptVersion | None: ...

    def list_prompt_versions(
        self, tenant: str | None = None, name: str | None = None, *, since: float | None = None
    ) -> list[PromptVersion]:
        """Versions, oldest first: of one tenant and/or prompt, or created at or after `since`."""
        ...

    def list_prompt_labels(self, tenant: str | None = None, name: str | None = None) -> list[PromptLabel]: ...

    def set_prompt_label(
        self,
        tenant: str,
        name: str,
        label: str,
        version: int,
        *,
        protected: bool | None,
        by: str | None,
        now: float,
        rollout: tuple[tuple[int, float], ...] = (),
    ) -> PromptLabel | None:
        """Point `label` at `version` with `rollout` shares of other versions (None when the prompt lacks one
        of them). `protected` None keeps the label's flag (a new label is unprotected)."""
        ...


__all__ = ["PromptContent", "PromptLabel", "PromptStore", "PromptVersion"]
