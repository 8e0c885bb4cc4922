"""`keel serve` on the simulated provider in a temp folder, for the benchmarks that need a whole gateway.

One place knows how a gateway is started for a bench: write its keel.yaml, start it, wait until its
bootstrap key is in its log and `/readyz` answers, or exit naming the log when it does not.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

KEEL = [sys.executable, "-m", "keel.cli.main"]
BOOTSTRAP = re.compile(r"created tenant 'default' and key (sk-keel-\S+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(
    tmp: Path, port: int, *, storage: str | None = None, timeout: float = 90.0, **sections: Any
) -> tuple[subprocess.Popen[bytes], str]:
    """Start `keel serve` in `tmp` on `port` (SQLite there unless `storage`); `sections` are added to keel.yaml
    (`traces` is merged). Returns (process, bootstrap key)."""
    config: dict[str, Any] = {
        "server": {"port": port},
        "storage": {"url": storage or f"sqlite:///{tmp / 'k.db'}"},
        "providers": {"sim": {"type": "simulated"}},
        "models": {"demo": {"targets": [{"provider": "sim", "model": "simulated-1"}]}},
        **sections,
    }
    config["traces"] = {"spill_dir": str(tmp / "spill"), **sections.get("traces", {})}
    (tmp / "keel.yaml").write_text(yaml.safe_dump(config))
    log = tmp / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*KEEL, "serve"], cwd=tmp, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        found = BOOTSTRAP.search(log.read_text(errors="replace"))
        if found:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                    return proc, found.group(1)
            except OSError:
                pass
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"bench: keel serve did not start within {timeout:.0f} s:\n{log.read_text(errors='replace')}")
