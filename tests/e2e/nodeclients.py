"""The Node clients the end-to-end tests drive (tests/e2e/node): installed once per lock, bounded.

Their packages are pinned by tests/e2e/node/package-lock.json and installed once (`npm ci`, bounded by
a timeout) into a cache directory named after the lock's hash (KEEL_NODE_CACHE, else
~/.cache/keel/node-clients); node or npm missing is a failure, never a skip.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

SOURCE = Path(__file__).parent / "node"
INSTALL_TIMEOUT_S = 300
RUN_TIMEOUT_S = 60


def node_dir() -> Path:
    """The installed packages (npm ci into a cache directory keyed by the lock) with the scripts beside them."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.fail(f"'{tool}' is not installed: these tests drive Node clients (apt-get install nodejs npm)")
    lock = (SOURCE / "package-lock.json").read_bytes()
    root = Path(os.environ.get("KEEL_NODE_CACHE") or Path.home() / ".cache" / "keel" / "node-clients")
    home = root / hashlib.sha256(lock + (SOURCE / "package.json").read_bytes()).hexdigest()[:16]
    if not (home / "node_modules").is_dir():
        root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="install-", dir=root))
        for name in ("package.json", "package-lock.json"):
            shutil.copy(SOURCE / name, work / name)
        try:
            done = subprocess.run(
                ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=work,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            shutil.rmtree(work, ignore_errors=True)
            pytest.fail(f"npm ci in {work} took longer than {INSTALL_TIMEOUT_S} s")
        if done.returncode != 0:
            shutil.rmtree(work, ignore_errors=True)
            pytest.fail(f"npm ci failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        try:
            work.rename(home)  # atomic: a concurrent session that won the race keeps its own
        except OSError:
            shutil.rmtree(work, ignore_errors=True)
    for script in SOURCE.glob("*.mjs"):
        shutil.copy(script, home / script.name)
    return home
