"""The registry's writes and views, the same for the admin API and the CLI.

`Registry` is synchronous (store calls); the admin API runs it in a thread. A protected label moves
only for an admin (the admin token, or an operator with the store: the CLI); a tenant's virtual key
may push versions and move the tenant's other labels.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from keel.audit.log import AuditLog
from keel.prompts.content import ContentError, check_name, content_hash, content_of
from keel.store.protocols import LabelMove, PromptLabel, PromptRollout, PromptStore, PromptVersion, RolloutPlan

DEFAULT_LABELS = ("production",)


class LabelRefused(PermissionError):
    """A protected label, moved without the admin token."""


class TeamRefused(PermissionError):
    """A push, by someone who reaches only their team's prompts, to a prompt of another team or of none."""


@dataclass(frozen=True, slots=True)
class Pushed:
    version: PromptVersion
    created: bool
    label: PromptLabel | None = None
    team: str | None = None  # the prompt's team (None: tenant-wide)


class Registry:
    """`audit`: where every label move and rollout start is recorded (the runtime's hash-chained log)."""

    def __init__(self, store: PromptStore, audit: AuditLog | None = None) -> None:
        self._store = store
        self._audit = audit

    def push(
        self, tenant: str, body: dict[str, Any], *, author: str | None, admin: bool, team: str | None = None,
        give: bool = False, own_only: bool = False,
    ) -> Pushed:  # fmt: skip
        """Store `body` ({name, messages, …, message?, label?}) as a version, or find the equal one; point
        `label` at it when given. A new prompt is `team`'s; `give` gives an existing one to `team` too;
        `own_only` refuses (TeamRefused) a prompt that is not `team`'s, before anything is stored."""
        name = check_name(body.get("name"))
        content = content_of(body)
        message = _text(body, "message")
        author = _text(body, "author") or author
        if give:
            self._store.set_prompt_team(tenant, name, team)
        owner = team if give else self._store.claim_prompt(tenant, name, team)
        if own_only and owner != team:
            whose = f"team '{owner}'" if owner is not None else "the whole tenant"
            raise TeamRefused(f"Prompt '{name}' belongs to {whose}: only team {team!r}'s prompts are yours to push.")
        version, created = self._store.push_prompt(
            tenant, name, content, content_hash(content), message=message, author=author, now=time.time()
        )
        label = body.get("label")
        moved = None
        if label is not None:
            moved = self.set_label(tenant, name, check_name(label, "label"), version.version, by=author, admin=admin)
        return Pushed(version, created, moved, owner)

    def set_label(
        self, tenant: str, name: str, label: str, version: int, *, by: str | None, admin: bool,
        protected: bool | None = None, rollout: tuple[tuple[int, float], ...] = (), reason: str | None = None,
    ) -> PromptLabel | None:  # fmt: skip
        """Move `label` to `version` (with `rollout` shares of other versions); None when a version is
        missing. LabelRefused for a protected label (or a change of protection) without admin rights."""
        check_name(label, "label")
        check_rollout(version, rollout)
        if not admin:
            if protected is not None:
                raise LabelRefused("Only the admin token may protect or unprotect a label.")
            current = next((lb for lb in self._store.list_prompt_labels(tenant, name) if lb.label == label), None)
            if current is not None and current.protected:
                raise LabelRefused(f"Label '{label}' of prompt '{name}' is protected: only the admin token moves it.")
        moved = self._store.set_prompt_label(
            tenant, name, label, version, protected=protected, by=by, now=time.time(), rollout=rollout, reason=reason
        )
        if moved is not None and self._audit is not None:
            after = {"version": version, "rollout": [list(r) for r in rollout], "protected": moved.protected}
            self._audit.append(
                by or "unknown", "prompt.label.move", f"{name}:{label}", tenant=tenant, after=after, result=reason
            )
        return moved

    def start_rollout(
        self, tenant: str, name: str, label: str, to: int, weight: float, plan: RolloutPlan, *, by: str, admin: bool
    ) -> tuple[PromptLabel, PromptRollout] | None:
        """Send `weight`% of the label's calls to version `to`, its current version staying the stable
        one, under `plan`'s guards and steps. None when the label or a version is missing."""
        current = self.label(tenant, name, check_name(label, "label"))
        if current is None:
            return None
        self._may_move(current, admin)
        if to == current.version:
            raise ContentError(f"Label '{label}' already points at v{to}: roll out another version.", "to")
        if not 0 < weight <= 100:
            raise ContentError("A rollout's weight is a percent above 0, at most 100.", "weight")
        now = time.time()
        rollout = PromptRollout(
            tenant, name, label, current.version, to, weight, plan, "running", now, by, now, None, now, None
        )
        moved = self._store.start_prompt_rollout(rollout)
        if moved is None:
            return None
        if self._audit is not None:
            after = {"stable": current.version, "version": to, "weight": weight, "guards": list(plan.guards)}
            self._audit.append(by, "prompt.rollout.start", f"{name}:{label}", tenant=tenant, after=after)
        return moved, rollout

    def rollback(self, tenant: str, name: str, label: str, *, by: str, admin: bool) -> PromptLabel | None:
        """Every call of the label to its stable version (its running rollout, if any, rolled back)."""
        current = self.label(tenant, name, check_name(label, "label"))
        if current is None:
            return None
        self._may_move(current, admin)
        return self.set_label(tenant, name, label, current.version, by=by, admin=admin, reason=f"rolled back by {by}")

    def rollouts(self, tenant: str, name: str) -> list[PromptRollout]:
        return self._store.list_prompt_rollouts(tenant, name)

    def history(self, tenant: str, name: str, label: str | None = None, limit: int = 100) -> list[LabelMove]:
        return self._store.prompt_label_history(tenant, name, label, limit=limit)

    @staticmethod
    def _may_move(current: PromptLabel, admin: bool) -> None:
        if current.protected and not admin:
            raise LabelRefused(
                f"Label '{current.label}' of prompt '{current.name}' is protected: only the admin token moves it."
            )

    def label(self, tenant: str, name: str, label: str) -> PromptLabel | None:
        return next((lb for lb in self._store.list_prompt_labels(tenant, name) if lb.label == label), None)

    def find(
        self, tenant: str, name: str, *, version: int | None = None, label: str | None = None
    ) -> PromptVersion | None:
        """A version by number, by label, or (neither) the latest."""
        if version is None and label is not None:
            found = next((lb for lb in self._store.list_prompt_labels(tenant, name) if lb.label == label), None)
            if found is None:
                return None
            version = found.version
        if version is None:
            versions = self._store.list_prompt_versions(tenant, name)
            return versions[-1] if versions else None
        return self._store.get_prompt_version(tenant, name, version)

    def summaries(self, tenant: str | None) -> list[dict[str, Any]]:
        """One row per prompt: its team, its latest version and labels."""
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        teams = self._store.prompt_teams(tenant)
        for v in self._store.list_prompt_versions(tenant):
            row = rows.setdefault(
                (v.tenant, v.name),
                {"tenant": v.tenant, "name": v.name, "team": teams.get((v.tenant, v.name)), "labels": {}},
            )
            row.update(latest=v.version, updated_at=v.created_at, author=v.author, message=v.message)
        for lb in self._store.list_prompt_labels(tenant):
            found = rows.get((lb.tenant, lb.name))
            if found is not None:
                found["labels"][lb.label] = lb.version
        return [rows[k] for k in sorted(rows)]


def version_view(v: PromptVersion, labels: list[PromptLabel] | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "tenant": v.tenant, "name": v.name, "version": v.version, "hash": v.hash, **v.content.json(),
        "message": v.message, "author": v.author, "created_at": v.created_at,
    }  # fmt: skip
    if labels is not None:
        view["labels"] = sorted(lb.label for lb in labels if lb.version == v.version)
    return view


def check_rollout(stable: int, rollout: tuple[tuple[int, float], ...]) -> None:
    """Shares of versions other than the stable one, each once, each above 0, together at most 100%."""
    seen = {stable}
    for i, (version, percent) in enumerate(rollout):
        if version in seen:
            raise ContentError(f"Version {version} appears twice in the label's split.", f"rollout[{i}].version")
        seen.add(version)
        if not 0 < percent <= 100:
            raise ContentError("A rollout's weight is a percent above 0, at most 100.", f"rollout[{i}].weight")
    if sum(p for _, p in rollout) > 100:
        raise ContentError("A rollout's weights add up to more than 100%.", "rollout")


def rollout_view(r: PromptRollout) -> dict[str, Any]:
    return {
        "tenant": r.tenant, "name": r.name, "label": r.label, "stable": r.stable, "version": r.version,
        "weight": r.weight, "state": r.state, **r.plan.json(), "started_at": r.started_at,
        "started_by": r.started_by, "stepped_at": r.stepped_at, "held_since": r.held_since,
        "updated_at": r.updated_at, "reason": r.reason,
    }  # fmt: skip


def move_view(m: LabelMove) -> dict[str, Any]:
    return {
        "label": m.label, "at": m.at, "version": m.version, "rollout": [{"version": v, "weight": w} for v, w in m.rollout],
        "actor": m.actor, "reason": m.reason,
    }  # fmt: skip


def label_view(lb: PromptLabel) -> dict[str, Any]:
    return {
        "tenant": lb.tenant, "name": lb.name, "label": lb.label, "version": lb.version, "protected": lb.protected,
        "rollout": [{"version": v, "weight": w} for v, w in lb.rollout],
        "updated_at": lb.updated_at, "updated_by": lb.updated_by,
    }  # fmt: skip


def _text(body: dict[str, Any], field: str) -> str | None:
    value = body.get(field)
    if value is not None and (not isinstance(value, str) or "\x00" in value or len(value) > 10_000):
        raise ContentError(f"'{field}' must be a string (at most 10,000 characters, no NUL).", field)
    return value


__all__ = [
    "ContentError", "LabelRefused", "Pushed", "Registry", "label_view", "move_view", "rollout_view", "version_view"
]  # fmt: skip
