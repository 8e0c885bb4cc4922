"""What the `keel` command imports before it runs anything: structural, not timed (bench/startup.py times it).

`keel --help` loads no noun's module; the nouns' parsers (`keel traces --help`) load their modules but
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


def test_the_full_parser_loads_no_serving_stack() -> None:
    """Every noun's parser at once (an argv naming them all): if one noun's module pulled in the serving stack,
    the union would hold it; the noun to blame is then found with `python -X importtime -m keel.cli.main NOUN -h`."""
    nouns = sorted({n.name for n in NOUNS})
    (modules,) = loaded((*nouns, "--help"))  # parses as `keel <first noun> --help`, after building all of them
    assert {f"keel.cli.{n.module}" for n in NOUNS} <= set(modules)  # each parser was built, so its imports were seen
    assert under(modules, SERVING) == []
