"""The backend matrix of the store contract suites.

`Backend`: open async stores of one kind (memory, Redis, SQLite cache, pgvector), run a body, close
them all. `SqlBackend`: one of the SQL stores' URLs from conftest's `storage_url` matrix (SQLite on
a temporary file, a migrated schema of its own in the real PostgreSQL: tests/postgres.py), with its
dialect and raw SQL on a fresh connection for what a protocol does not expose (the migrations ledger).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from contextlib import closing
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar


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


@dataclass(frozen=True)
class SqlBackend:
    dialect: str  # the folder name of its migrations
    url: str

    @classmethod
    def of(cls, url: str) -> SqlBackend:
        return cls("sqlite" if url.startswith("sqlite:///") else "postgres", url)

    def query(self, text: str) -> list[tuple[Any, ...]]:
        """Raw SQL on a fresh connection."""
        if self.dialect == "sqlite":
            with closing(sqlite3.connect(self.url.removeprefix("sqlite:///"))) as conn:
                return conn.execute(text).fetchall()
        import psycopg

        with psycopg.connect(self.url) as pg:
            return pg.execute(text.encode()).fetchall()
