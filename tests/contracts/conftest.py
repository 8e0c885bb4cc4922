"""What the store contracts share: one opened store per test over the backend `storage_url` names
(SQLite, PostgreSQL), closed after it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from keel.store.open import open_store
from keel.store.protocols import Store


@pytest.fixture
def store(storage_url: str) -> Iterator[Store]:
    opened = open_store(storage_url)
    try:
        yield opened
    finally:
        opened.close()
