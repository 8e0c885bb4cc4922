"""Shared set-up for commands that need the config or the store."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from keel import config
from keel.cli.output import Failure

if TYPE_CHECKING:
    from keel.store.protocols import Store


def load_config(args: argparse.Namespace) -> config.Config:
    return config.load(args.config)


@contextlib.contextmanager
def store(args: argparse.Namespace, *, migrate: bool = True) -> Iterator[Store]:
    """The configured store, closed afterwards. Stores raise ValueError for what the user can fix:
    it is printed as the command's failure (exit 1), without a traceback."""
    from keel.store.open import open_store  # here: `keel config check` and the remote commands need no store

    s = open_store(load_config(args).storage.url, migrate=migrate)
    try:
        yield s
    except ValueError as exc:
        raise Failure(str(exc)) from None
    finally:
        s.close()
