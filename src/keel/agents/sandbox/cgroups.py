"""Per-run cgroups (v1) for the sandbox, besides its per-process rlimits: `memory` caps the run's memory
summed over all its processes (RLIMIT_AS caps each one alone), `pids` its process count, and `cpu` its
share of the machine (`Limits.cpus` as a CFS quota: RLIMIT_CPU counts seconds per process, not cores).

`Cgroups()` probes once whether the memory, pids and cpu hierarchies are mounted and writable here (a
parent `keel-sandbox` directory in each); where not, `problem` says why, the sandbox keeps its rlimits
alone and readyz and the log say so. A run's cgroup is joined by the sandbox's own process before it execs
bubblewrap (so every process of the run is born inside), and removed after, its counters read first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import time
from dataclasses import dataclass

ROOT = "/sys/fs/cgroup"
CONTROLLERS = ("memory", "pids", "cpu")
PARENT = "keel-sandbox"
PERIOD_US = 100_000
log = logging.getLogger("keel.agents.sandbox")


@dataclass(frozen=True, slots=True)
class Usage:
    """What the run's cgroup counted: memory limit hits and OOM kills, refused forks, throttled periods."""

    memory_failcnt: int = 0
    oom_kills: int = 0
    pids_refused: int = 0
    cpu_throttled: int = 0


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _fields(path: str) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and parts[1].lstrip("-").isdigit():
                    out[parts[0]] = int(parts[1])
    except OSError:
        pass
    return out


class RunCgroup:
    """One run's directory in each hierarchy."""

    def __init__(self, paths: tuple[str, ...]) -> None:
        self.paths = paths

    def join(self) -> None:
        """Move the calling process in (the sandbox's child, before exec; its descendants follow)."""
        pid = str(os.getpid())
        for path in self.paths:
            _write(os.path.join(path, "cgroup.procs"), pid)

    def usage(self) -> Usage:
        memory, pids, cpu = self.paths
        try:
            with open(os.path.join(memory, "memory.failcnt")) as f:
                failcnt = int(f.read().strip() or 0)
        except (OSError, ValueError):
            failcnt = 0
        return Usage(
            failcnt,
            _fields(os.path.join(memory, "memory.oom_control")).get("oom_kill", 0),
            _fields(os.path.join(pids, "pids.events")).get("max", 0),
            _fields(os.path.join(cpu, "cpu.stat")).get("nr_throttled", 0),
        )

    def remove(self) -> None:
        """Kill whatever is left inside and remove the directories (blocking: call it off the event loop)."""
        for _ in range(200):
            left = False
            for path in self.paths:
                try:
                    with open(os.path.join(path, "cgroup.procs")) as f:
                        pids = [int(p) for p in f.read().split()]
                except OSError:
                    continue
                for pid in pids:
                    left = True
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
            if not left and all(self._rmdir(p) for p in self.paths):
                return
            time.sleep(0.005)
        log.warning("sandbox: a run's cgroup could not be removed within 1 s (left in place): %s", self.paths[0])

    @staticmethod
    def _rmdir(path: str) -> bool:
        try:
            os.rmdir(path)
        except FileNotFoundError:
            return True
        except OSError:
            return False
        return True


class Cgroups:
    def __init__(self, root: str = ROOT) -> None:
        self.root = root
        self.problem = self._probe()

    @property
    def available(self) -> bool:
        return self.problem is None

    def _probe(self) -> str | None:
        for name in CONTROLLERS:
            base = os.path.join(self.root, name)
            if not os.path.isfile(os.path.join(base, "cgroup.procs")):
                return f"no cgroup v1 '{name}' hierarchy at {base}"
            try:
                os.makedirs(os.path.join(base, PARENT), exist_ok=True)
            except OSError as exc:
                return f"cannot create {os.path.join(base, PARENT)}: {exc.strerror}"
        return None

    def create(self, memory_mb: int, processes: int, cpus: float) -> RunCgroup:
        """A new cgroup in each hierarchy with the run's limits (blocking: call it off the event loop)."""
        name = "run-" + secrets.token_hex(8)
        paths = tuple(os.path.join(self.root, c, PARENT, name) for c in CONTROLLERS)
        for path in paths:
            os.mkdir(path)
        memory, pids, cpu = paths
        try:
            _write(os.path.join(memory, "memory.limit_in_bytes"), str(memory_mb * 1024 * 1024))
            _write(os.path.join(pids, "pids.max"), str(processes))
            _write(os.path.join(cpu, "cpu.cfs_period_us"), str(PERIOD_US))
            _write(os.path.join(cpu, "cpu.cfs_quota_us"), str(max(1000, int(cpus * PERIOD_US))))
        except OSError:
            RunCgroup(paths).remove()
            raise
        return RunCgroup(paths)
