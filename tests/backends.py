"""One helper for every store contract suite: open stores of one kind, run a body, close them all."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar


class Closable(Protocol):
    async def aclose(self) -> None: ...


S = TypeVar("S", bound=Closable)
A = TypeVar("A")


class Backend(Generic[S, A]):
    """Opens stores of one kind (several on one URL: processes sharing it, or a reopen); runs a test body
    in one event loop and closes what it opened. `make` takes one setting (a policy, a lease, a bound)."""

    def __init__(self, make: Callable[[A], S], default: A, name: str = "") -> None:
        self.name = name
        self._make = make
        self._default = default
        self._opened: list[S] = []

    def open(self, setting: A | None = None) -> S:
        store = self._make(self._default if setting is None else setting)
        self._opened.append(store)
        return store

    def run(self, body: Callable[[], Awaitable[None]]) -> None:
        async def main() -> None:
            try:
                await body()
            finally:
                for store in self._opened:
                    await store.aclose()
                self._opened.clear()

        asyncio.run(main())
