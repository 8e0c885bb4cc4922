"""Shared set-up for commands that need the config or the store."""

from __future__ import annotations

import argparse

from keel import config
from keel.store.open import open_store
from keel.store.protocols import Store


def load_config(args: argparse.Namespace) -> config.Config:
    return config.load(args.config)


def store(args: argparse.Namespace, *, migrate: bool = True) -> Store:
    return open_store(load_config(args).storage.url, migrate=migrate)
