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


@dataclass(frozen=True, slots=True)
class RolloutPlan:
    """How a rollout proceeds: guards judged over `window_s` once the new version has `min_calls`; held for
    `every_s`, the weight steps to the next of `steps` (then 100%, which ends it); breached, it rolls back."""

    guards: tuple[str, ...] = ()  # "error_rate<0.02", "p95_ms<4000", "cost_per_call<0.01", "feedback>=0.7"
    steps: tuple[float, ...] = ()  # weights after the first, increasing; 100 is always the last
    every_s: float | None = None  # None: no step-up (the weight stays until moved by hand)
    window_s: float = 300.0
    min_calls: int = 50

    def json(self) -> dict[str, Any]:
        return {
            "guards": list(self.guards), "steps": list(self.steps), "every_s": self.every_s,
            "window_s": self.window_s, "min_calls": self.min_calls,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class PromptRollout:
    """A label's latest rollout: `version` gets `weight`% of calls, `stable` the rest, while `running`.
    Ends as `rolled_back` (a guard breached, or by hand), `done` (stepped to 100%) or `ended` (the label
    was moved by hand). `rev` counts transitions: each one is a compare-and-set on it."""

    tenant: str
    name: str
    label: str
    stable: int
    version: int
    weight: float
    plan: RolloutPlan
    state: str  # running | rolled_back | done | ended
    started_at: float
    started_by: str | None
    stepped_at: float  # when the weight last changed
    held_since: float | None  # since when every guard has held at this weight (None: not holding)
    updated_at: float
    reason: str | None  # why it ended (or the last step)
    rev: int = 0


@dataclass(frozen=True, slots=True)
class LabelMove:
    """One entry of a label's history: where it pointed after the move, who moved it and why."""

    tenant: str
    name: str
    label: str
    at: float
    version: int
    rollout: tuple[tuple[int, float], ...]
    actor: str | None
    reason: str | None


class PromptStore(Protocol):
    def push_prompt(
        self, tenant: str, name: str, content: PromptContent, hash: str, *, message: str | None, author: str | None,
        now: float,
    ) -> tuple[PromptVersion, bool]:  # fmt: skip
        """Store `content` as the prompt's next version, or find the version that has its `hash`;
        True when it is new."""
        ...

    def get_prompt_version(self, tenant: str, name: str, version: int) -> PromptVersion | None: ...

    def claim_prompt(self, tenant: str, name: str, team: str | None) -> str | None:
        """The team the prompt belongs to (None: tenant-wide); a prompt not yet claimed becomes `team`'s.
        One statement, so two pushes of a new name agree on its owner."""
        ...

    def set_prompt_team(self, tenant: str, name: str, team: str | None) -> None:
        """Give the prompt to `team` (None: tenant-wide), claimed or not."""
        ...

    def prompt_teams(self, tenant: str | None = None, name: str | None = None) -> dict[tuple[str, str], str | None]:
        """(tenant, name) -> team (None: tenant-wide) of every prompt claimed or given: of one tenant and/or
        name."""
        ...

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
        reason: str | None = None,
    ) -> PromptLabel | None:
        """Point `label` at `version` with `rollout` shares of other versions (None when the prompt lacks one
        of them). `protected` None keeps the label's flag (a new label is unprotected). The move goes to
        the label's history; a running rollout of the label ends (`ended`, or `rolled_back` when the
        label returns to that rollout's stable version with no shares)."""
        ...

    def start_prompt_rollout(self, rollout: PromptRollout) -> PromptLabel | None:
        """Point the label at `rollout.stable` with `rollout.weight`% to `rollout.version`, and make it the
        label's running rollout (replacing any earlier one), in one transaction, with a history entry.
        None when the prompt lacks either version."""
        ...

    def list_prompt_rollouts(
        self, tenant: str | None = None, name: str | None = None, *, running: bool = False
    ) -> list[PromptRollout]: ...

    def advance_prompt_rollout(
        self, rollout: PromptRollout, *, label: tuple[int, tuple[tuple[int, float], ...]] | None, actor: str
    ) -> bool:
        """Write `rollout` (its new state, same `rev` as read) if the stored one is still running at that
        rev; with `label` (version, shares), move the label too and record the move. False when another
        process (or a hand) got there first: nothing is written."""
        ...

    def prompt_label_history(
        self, tenant: str, name: str, label: str | None = None, *, limit: int = 100
    ) -> list[LabelMove]:
        """The latest moves first."""
        ...


__all__ = ["LabelMove", "PromptContent", "PromptLabel", "PromptRollout", "PromptStore", "PromptVersion", "RolloutPlan"]
