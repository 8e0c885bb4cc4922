"""The prompts the request path reads: every version and label, in memory, refreshed from the store.

`PromptBook.resolve` is a dict lookup; nothing on the request path touches SQL. `PromptSync` reads what
changed: versions created since the last read (less a margin for clocks and commits that land late:
versions are immutable, so a re-read one is merely replaced by an equal one) and every label (few
rows). A store outage keeps the last book. An admin write in this process refreshes at once; other
processes see it within one refresh period.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from keel.errors import NotFound
from keel.gateway.routing import BUCKETS, bucket
from keel.prompts.render import CompiledMessage, compile_messages
from keel.store.protocols import PromptLabel, PromptStore, PromptVersion

log = logging.getLogger("keel.prompts")
MARGIN_S = 60.0  # versions re-read on each refresh: what a commit may lag its created_at by


@dataclass(frozen=True, slots=True)
class Route:
    """Where a label sends a call: the stable version, unless the caller's bucket falls in a rollout's
    share. Shares are stacked from bucket 0 up, so raising a share keeps everyone it had."""

    stable: int
    shares: tuple[tuple[int, int], ...] = ()  # (bucket bound, version), bounds increasing

    @classmethod
    def of(cls, label: PromptLabel) -> Route:
        bound, shares = 0, []
        for version, percent in label.rollout:
            bound += round(percent * BUCKETS / 100)
            shares.append((bound, version))
        return cls(label.version, tuple(shares))

    def pick(self, tenant: str, name: str, label: str, subject: str) -> tuple[int, str]:
        """The version for `subject` (user, else session, else key) and its variant: stable | rollout."""
        if not self.shares:
            return self.stable, "stable"
        b = bucket(f"{tenant}\x00{name}\x00{label}\x00{subject}")
        for bound, version in self.shares:
            if b < bound:
                return version, "rollout"
        return self.stable, "stable"


@dataclass(frozen=True, slots=True)
class Served:
    """A version ready to render: its messages compiled, its variables schema's validator built."""

    version: PromptVersion
    messages: tuple[CompiledMessage, ...]
    names: frozenset[str]
    validator: Any  # a jsonschema validator, or None without a schema

    @classmethod
    def of(cls, version: PromptVersion) -> Served:
        messages, names = compile_messages(version.content.messages)
        validator = None
        schema = version.content.variables
        if schema is not None:
            import jsonschema  # type: ignore[import-untyped]

            validator = jsonschema.validators.validator_for(schema)(schema)
        return cls(version, messages, names, validator)


@dataclass(slots=True)
class Entry:
    versions: dict[int, Served] = field(default_factory=dict)
    labels: dict[str, Route] = field(default_factory=dict)
    latest: int = 0


class PromptBook:
    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], Entry] = {}

    def resolve(
        self, tenant: str, name: str, version: int | None, label: str | None, subject: str = ""
    ) -> tuple[Served, str | None]:
        """The version a call names: by number, by label (for `subject`, when the label has a rollout), or
        (neither) the latest; and the label's variant (None without a label). 404 when unknown."""
        variant = None
        entry = self._entries.get((tenant, name))
        if entry is None or not entry.versions:
            raise _not_found(f"No prompt named '{name}'.", "prompt.id")
        if version is None:
            if label is None:
                version = entry.latest
            else:
                route = entry.labels.get(label)
                if route is None:
                    known = ", ".join(sorted(entry.labels)) or "none"
                    raise _not_found(f"Prompt '{name}' has no label '{label}' (labels: {known}).", "prompt.label")
                version, variant = route.pick(tenant, name, label, subject)
        served = entry.versions.get(version)
        if served is None:
            raise _not_found(f"Prompt '{name}' has no version {version} (latest: {entry.latest}).", "prompt.version")
        return served, variant

    def update(self, versions: Iterable[PromptVersion], labels: Iterable[PromptLabel]) -> None:
        """Add `versions` (compiled once each) and replace every label with `labels`."""
        entries = dict(self._entries)
        for v in versions:
            key = (v.tenant, v.name)
            entry = entries.get(key)
            if entry is None:
                entry = entries[key] = Entry()
            if v.version not in entry.versions:
                try:
                    entry.versions[v.version] = Served.of(v)
                except Exception as exc:  # written around the registry's checks: one bad row must not stop the rest
                    log.warning("prompt %s@%d of tenant %s is not servable: %s", v.name, v.version, v.tenant, exc)
                    continue
                entry.latest = max(entry.latest, v.version)
        moved: dict[tuple[str, str], dict[str, Route]] = {}
        for lb in labels:
            moved.setdefault((lb.tenant, lb.name), {})[lb.label] = Route.of(lb)
        for key, entry in entries.items():
            entry.labels = moved.get(key, {})
        self._entries = entries  # one assignment: a call sees the old book or the new one


class PromptSync:
    def __init__(self, store: PromptStore, book: PromptBook) -> None:
        self._store = store
        self._book = book
        self._since: float | None = None
        self._warned_at = float("-inf")
        self._lock = asyncio.Lock()

    def load(self) -> None:
        """One synchronous read (at build, before serving)."""
        started = time.time()
        versions = self._store.list_prompt_versions(since=self._since)
        self._book.update(versions, self._store.list_prompt_labels())
        self._since = started - MARGIN_S

    async def refresh(self) -> None:
        async with self._lock:
            try:
                await asyncio.to_thread(self.load)
            except Exception as exc:
                if time.monotonic() - self._warned_at >= 30.0:
                    self._warned_at = time.monotonic()
                    log.warning("reading prompts failed (%s: %s); keeping the last ones", type(exc).__name__, exc)


def _not_found(message: str, param: str) -> NotFound:
    err = NotFound(message)
    err.param = param
    return err
