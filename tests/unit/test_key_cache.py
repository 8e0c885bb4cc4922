"""The Authenticator's cache against a real SQLite store that a test slows down or breaks.

One store read per key however many requests carry it; a key in steady use is re-read in the
background and never waits; a read that failed is not repeated for a second, and a key nobody
vouched for is told 503 (the store is unreachable), never 401.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keel.errors import AuthError, Unavailable
from keel.keys.auth import Authenticator, issue_key
from keel.store.open import open_store
from keel.store.protocols import KeyRow, Store


class Gated:
    """A real store whose key reads can be held, slowed or failed, and are counted."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.reads = 0
        self.open = threading.Event()
        self.open.set()
        self.delay = 0.0
        self.failing = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def find_key(self, key_hash: str) -> KeyRow | None:
        self.reads += 1
        self.open.wait(10)
        time.sleep(self.delay)
        if self.failing:
            raise OSError("the database is gone")
        return self._store.find_key(key_hash)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Gated]:
    opened = open_store(f"sqlite:///{tmp_path}/keel.db")
    opened.create_tenant("acme")
    try:
        yield Gated(opened)
    finally:
        opened.close()


def test_concurrent_requests_for_one_key_share_one_store_read(store: Gated) -> None:
    key = issue_key(store._store, "acme").key
    auth = Authenticator(store)
    store.open.clear()

    async def main() -> list[Any]:
        waiting = [asyncio.ensure_future(auth.resolve(key)) for _ in range(50)]
        while auth.stats.misses < 50 or store.reads < 1:  # all 50 have asked and wait on the one read, held
            await asyncio.sleep(0.005)
        store.open.set()
        return await asyncio.gather(*waiting)

    answers = asyncio.run(main())
    auth.close()
    assert store.reads == 1
    assert {principal.tenant for principal, _ in answers} == {"acme"}


def test_a_key_in_steady_use_is_re_read_in_the_background_and_never_waits(store: Gated) -> None:
    key = issue_key(store._store, "acme").key
    auth = Authenticator(store, ttl=0.6)
    store.delay = 0.05  # every read takes 50 ms

    async def main() -> None:
        await auth.resolve(key)
        deadline = time.monotonic() + 2.0  # more than three TTLs
        while time.monotonic() < deadline:
            await auth.resolve(key)
            await asyncio.sleep(0.01)

    asyncio.run(main())
    auth.close()
    assert store.reads >= 3  # re-read before each expiry...
    assert auth.stats.misses == 1  # ...and only the first call found no fresh entry


def test_a_failed_read_is_not_repeated_for_a_second_and_an_unvouched_key_gets_503(store: Gated) -> None:
    key = issue_key(store._store, "acme").key
    auth = Authenticator(store)
    store.failing = True

    async def twice() -> list[BaseException]:
        return [await _error(auth, key), await _error(auth, key)]

    first, second = asyncio.run(twice())
    assert isinstance(first, Unavailable) and isinstance(second, Unavailable)  # not AuthError: the key may be good
    assert first.headers() == {"retry-after": "1"}
    assert store.reads == 1 and auth.store_down()
    store.failing = False
    time.sleep(1.0)  # the hold-off on this key
    # still down until a read succeeds (the poller's, in a gateway): this call starts one, the next one has it
    asyncio.run(_error(auth, key))
    deadline = time.monotonic() + 5
    while auth.store_down() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert asyncio.run(auth.resolve(key))[0].tenant == "acme"
    assert store.reads == 2 and not auth.store_down()
    auth.close()


async def _error(auth: Authenticator, key: str) -> BaseException:
    try:
        await auth.resolve(key)
    except (Unavailable, AuthError) as exc:
        return exc
    raise AssertionError("resolved a key the store could not read")
