"""`evals:` (suite runs: README "Evals")."""

from __future__ import annotations

import re

from keel.config.parts import Model
from keel.errors import ConfigIssue

_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")


class EvalsConfig(Model):
    # Modules (and their submodules) whose functions `python` assertions may name: a suite comes from a
    # virtual key's holder, and the function runs in the gateway's process. Empty: python assertions refused.
    python_modules: list[str] = []


def check(e: EvalsConfig) -> list[ConfigIssue]:
    return [
        ConfigIssue(
            f"evals.python_modules[{i}]", f"{m!r} is not a module name", "write a dotted module name, e.g. my_scorers"
        )
        for i, m in enumerate(e.python_modules)
        if not _MODULE.match(m)
    ]
