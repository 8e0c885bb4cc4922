"""What the `keel` command imports before it runs anything: structural, not timed (bench/startup.py times it).

`keel --help` loads no noun's module; a noun's parser (`keel traces --help`) loads that noun's module but
never the serving stack: the runtime, the HTTP edge, aiohttp, uvicorn, numpy. Each check runs in a fresh
interpreter, since this one has imported everything already.
"""

from __future__ import annotations

import json
import subprocess
import sys

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


def loaded(*commands: tuple[str, ...]) -> list[list[str]]:
    """Per command line, the modules a fresh interpreter holds after `keel ARGV` (a --help: it exits before
    running anything). The interpreters run side by side."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _PROBE, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for argv in commands
    ]
    out = []
    for argv, proc in zip(commands, procs, strict=True):
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, f"keel {' '.join(argv)}: {stderr}"
        out.append(json.loads(stdout.splitlines()[-1]))
    return out


def under(modules: list[str], roots: tuple[str, ...]) -> list[str]:
    return [m for m in modules if any(m == r or m.startswith(r + ".") for r in roots)]


def test_help_loads_no_noun_module() -> None:
    (modules,) = loaded(("--help",))
    assert under(modules, LISTING) == []
    assert [m for m in modules if m.startswith("keel.cli.") and m != "keel.cli.main"] == []


def test_a_nouns_parser_loads_no_serving_stack() -> None:
    nouns = sorted({n.name for n in NOUNS})
    heavy = {}
    for noun, modules in zip(nouns, loaded(*((noun, "--help") for noun in nouns)), strict=True):
        module = next(n.module for n in NOUNS if n.name == noun)
        assert f"keel.cli.{module}" in modules  # its own parser was built, so the check below saw its imports
        if found := under(modules, SERVING):
            heavy[noun] = found
    assert heavy == {}
