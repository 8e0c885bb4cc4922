"""Extra capability builders named in config (`jobs.plugins: ["module:attr"]`), e.g. a test's job kinds
or an embedder's own, loaded the way the built-in ones are listed."""

from __future__ import annotations

import importlib
from collections.abc import Sequence

from keel.gateway.capability import Builder


def load_builders(specs: Sequence[str]) -> list[Builder]:
    builders = []
    for spec in specs:
        module, _, attr = spec.partition(":")
        if not module or not attr:
            raise ValueError(f"jobs.plugins: {spec!r} is not module:attr (e.g. mypackage.jobs:build)")
        try:
            found = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"jobs.plugins: cannot load {spec!r}: {exc}") from exc
        if not callable(found):
            raise ValueError(f"jobs.plugins: {spec!r} is not a builder (a callable taking the build context)")
        builders.append(found)
    return builders
