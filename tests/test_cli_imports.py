"""What the `keel` command imports before it runs anything: structural, not timed (bench/startup.py times it).

`keel --help` loads no noun's module; a noun's parser (`keel traces --help`) loads that noun's module but
never the serving stack: the runtime, the HTTP edge, aiohttp, uvicorn, numpy. Each check runs in a fresh
interpreter, since this one has imported everything already.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from keel.cli.main import NOUNS

SERVING = ("keel.runtime", "keel.api", "keel.dashboard", "aiohttp", "uvicorn", "starlette", "numpy", "tokenizers")
# --help lists the nouns only: no config schema, no store, no YAML or pydantic either
LISTING = (*SERVING, "keel.config", "keel.store", "keel.gateway", "keel.providers", "keel.traces", "pydantic", "yaml")

_PROBE = """
import contextlib, io, json, sys
from keel.cli.main import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
    main(sys.argv[1:])
print(json.dumps(sorted(sys.modules)))
"""


def loaded(*argv: str) -> list[str]:
    """The modules a fresh interpreter holds after `keel ARGV` (a --help: it exits before running anything)."""
    out = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, timeout=60, check=True)
    modules: list[str] = json.loads(out.stdout.splitlines()[-1])
    return modules


def under(modules: list[str], roots: tuple[str, ...]) -> list[str]:
    return [m for m in modules if any(m == r or m.startswith(r + ".") for r in roots)]


def test_help_loads_no_noun_module() -> None:
    modules = loaded("--help")
    assert under(modules, LISTING) == []
    assert [m for m in modules if m.startswith("keel.cli.") and m not in ("keel.cli.main", "keel.cli.output")] == []


@pytest.mark.parametrize("noun", sorted({n.name for n in NOUNS}))
def test_a_nouns_parser_loads_no_serving_stack(noun: str) -> None:
    modules = loaded(noun, "--help")
    assert under(modules, SERVING) == []
    module = next(n.module for n in NOUNS if n.name == noun)
    assert f"keel.cli.{module}" in modules  # its own parser was built, so the check above saw its imports
