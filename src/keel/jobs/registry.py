"""Which handler runs each job kind: filled from every builder's `Contribution.jobs` at build time."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from keel.store.protocols import JobHandler


class JobRegistry:
    def __init__(self) -> None:
        self._handlers: dict[str, JobHandler] = {}

    def register(self, kind: str, handler: JobHandler) -> None:
        if kind in self._handlers:
            raise ValueError(f"job kind {kind!r} has two handlers: a kind belongs to one capability")
        self._handlers[kind] = handler

    def register_all(self, contributed: Iterable[Mapping[str, JobHandler]]) -> None:
        for handlers in contributed:
            for kind, handler in handlers.items():
                self.register(kind, handler)

    def get(self, kind: str) -> JobHandler | None:
        return self._handlers.get(kind)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(sorted(self._handlers))
