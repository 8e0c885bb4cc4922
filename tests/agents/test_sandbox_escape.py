"""The escape suite: each attempt runs as a code tool in the sandbox and must be refused or contained.

Every attempt prints its outcome (run with -s to see the list); the assertion is what "contained"
means for it. The loopback services are the real ones this machine runs (Redis 6379, PostgreSQL 5432).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from keel.agents.sandbox import Limits, Outcome, Sandbox, SandboxUnavailable

SANDBOX = Sandbox()
SHORT = Limits(cpu_s=2, wall_s=4, memory_mb=256, processes=16)


def connect(family: str, kind: str, host: str, port: int) -> str:
    return f"""
import socket
try:
    s = socket.socket(socket.{family}, socket.{kind})
    s.settimeout(2)
    s.connect(({host!r}, {port}))
    s.send(b'PING\\r\\n')
    print('CONNECTED', s.recv(100))
except OSError as e:
    print('REFUSED', type(e).__name__, e.errno, e)
"""


READ = """
import os
for p in {paths!r}:
    try:
        print('READ', p, open(p, 'rb').read(40) if not os.path.isdir(p) else os.listdir(p))
    except OSError as e:
        print('REFUSED', p, type(e).__name__)
"""

SYSCALL = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
rc = {call}
print('REFUSED' if rc == -1 else 'ALLOWED', rc, ctypes.get_errno())
"""


@dataclass(frozen=True)
class Attempt:
    name: str
    code: str
    contained: Callable[[Outcome], bool]
    limits: Limits = SHORT


def printed_refused(o: Outcome) -> bool:
    return o.exit_code == 0 and "REFUSED" in o.stdout and "CONNECTED" not in o.stdout and "READ" not in o.stdout


PROJECT = str(Path(__file__).resolve().parents[2])
ATTEMPTS = [
    Attempt(
        "tcp to Redis on the host's loopback", connect("AF_INET", "SOCK_STREAM", "127.0.0.1", 6379), printed_refused
    ),
    Attempt(
        "tcp to PostgreSQL on the host's loopback",
        connect("AF_INET", "SOCK_STREAM", "127.0.0.1", 5432),
        printed_refused,
    ),
    Attempt("tcp to the internet (1.1.1.1:80)", connect("AF_INET", "SOCK_STREAM", "1.1.1.1", 80), printed_refused),
    Attempt("tcp over IPv6 (::1 port 6379)", connect("AF_INET6", "SOCK_STREAM", "::1", 6379), printed_refused),
    Attempt("udp to a DNS server (8.8.8.8:53)", connect("AF_INET", "SOCK_DGRAM", "8.8.8.8", 53), printed_refused),
    Attempt(
        "DNS resolution (getaddrinfo)",
        "import socket\ntry:\n    print('CONNECTED', socket.getaddrinfo('example.com', 80))\n"
        "except OSError as e:\n    print('REFUSED', e)\n",
        printed_refused,
    ),
    Attempt(
        "PostgreSQL's unix socket",
        "import socket\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect('/var/run/postgresql/.s.PGSQL.5432')\n"
        "    print('CONNECTED')\nexcept OSError as e:\n    print('REFUSED', type(e).__name__)\n",
        printed_refused,
    ),
    Attempt("read /etc/shadow and /etc/passwd", READ.format(paths=["/etc/shadow", "/etc/passwd"]), printed_refused),
    Attempt("read the project", READ.format(paths=[PROJECT, f"{PROJECT}/pyproject.toml", "/work"]), printed_refused),
    Attempt(
        "read the home directory",
        READ.format(paths=["/root", os.path.expanduser("~/.bashrc"), "/home"]),
        printed_refused,
    ),
    Attempt(
        "write outside the work dir",
        "for p in ['/escape', '/usr/escape', '/etc/escape', '/proc/sys/kernel/hostname']:\n"
        "    try:\n        open(p, 'w').write('x'); print('WROTE', p)\n"
        "    except OSError as e:\n        print('REFUSED', p, type(e).__name__)\n",
        lambda o: o.exit_code == 0 and "WROTE" not in o.stdout and o.stdout.count("REFUSED") == 4,
    ),
    Attempt(
        "fork bomb",
        "import os\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n            import time; time.sleep(30)\n"
        "        n += 1\nexcept OSError as e:\n    print('REFUSED after', n, 'forks:', type(e).__name__)\n",
        lambda o: "REFUSED after" in o.stdout and int(o.stdout.split()[2]) < 16,
    ),
    Attempt(
        "memory bomb (2 GiB)",
        "try:\n    b = bytearray(2 * 1024**3); print('ALLOCATED')\nexcept MemoryError:\n    print('REFUSED MemoryError')\n",
        lambda o: "REFUSED" in o.stdout and "ALLOCATED" not in o.stdout,
    ),
    Attempt(
        "CPU spin",
        "while True:\n    pass\n",
        lambda o: o.exit_code != 0 and o.signal == 9,  # SIGXCPU, then SIGKILL at the hard limit
        Limits(cpu_s=1, wall_s=10),
    ),
    Attempt(
        "sleep past the wall clock",
        "import time\ntime.sleep(60)\nprint('WOKE')\n",
        lambda o: o.timed_out and "WOKE" not in o.stdout,
        Limits(wall_s=1),
    ),
    Attempt(
        "huge output",
        "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n",
        lambda o: o.truncated and len(o.stdout) == 4096,
        Limits(output_bytes=4096, wall_s=10),
    ),
    Attempt(
        "fill the disk (tmpfs) with many files",
        "import os\nn = 0\ntry:\n    while True:\n        open(f'/sandbox/f{n}', 'wb').write(b'x' * 1024**2); n += 1\n"
        "except OSError as e:\n    print('REFUSED after', n, 'MiB:', type(e).__name__)\n",
        lambda o: "REFUSED after" in o.stdout and int(o.stdout.split()[2]) <= 8,
        Limits(disk_mb=8, wall_s=10),
    ),
    Attempt(
        "read the gateway's environment and secrets",
        "import os\nleaks = [k for k in os.environ if 'KEEL' in k or 'SECRET' in k]\n"
        "for pid in os.listdir('/proc'):\n    if pid.isdigit():\n        try:\n"
        "            env = open(f'/proc/{pid}/environ', 'rb').read()\n"
        "            leaks += [pid] if b'KEEL_ESCAPE_CANARY' in env else []\n"
        "        except OSError:\n            pass\nprint('LEAKED' if leaks else 'REFUSED no canary', leaks)\n",
        lambda o: o.exit_code == 0 and "REFUSED no canary" in o.stdout,
    ),
    Attempt("ptrace", SYSCALL.format(call="libc.ptrace(0, 0, 0, 0)"), lambda o: "REFUSED -1 1" in o.stdout),
    Attempt(
        "mount a tmpfs",
        SYSCALL.format(call="libc.mount(b'none', b'/sandbox', b'tmpfs', 0, None)"),
        lambda o: "REFUSED -1 1" in o.stdout,
    ),
    Attempt(
        "unshare a user namespace",
        SYSCALL.format(call="libc.unshare(0x10000000)"),
        lambda o: "REFUSED -1 1" in o.stdout,
    ),
    Attempt(
        "clone into a new network namespace",
        SYSCALL.format(call="libc.syscall(56, 0x40000000 | 17, 0, 0, 0, 0)"),
        lambda o: "REFUSED -1 1" in o.stdout,
    ),
    Attempt(
        "keyctl (the kernel keyring)",
        SYSCALL.format(call="libc.syscall(250, 0, 0, 0, 0, 0)"),
        lambda o: "REFUSED -1 1" in o.stdout,
    ),
    Attempt(  # each child stays under its RLIMIT_AS (256 MiB); only the run's memory cgroup sums them
        "memory spread over processes (each under its rlimit)",
        "import os\nkids = []\nfor i in range(6):\n    pid = os.fork()\n    if pid == 0:\n"
        "        x = bytearray(150 * 1024 * 1024)\n        for j in range(0, len(x), 4096): x[j] = 1\n"
        "        os._exit(0)\n    kids.append(pid)\n"
        "print('KILLED' if any(os.waitpid(p, 0)[1] for p in kids) else 'ALL FED', 6 * 150, 'MiB asked')\n",
        lambda o: "KILLED" in o.stdout and o.cgroup is not None and o.cgroup.oom_kills > 0,
        Limits(cpu_s=10, wall_s=30, memory_mb=256, processes=16),
    ),
    Attempt(  # RLIMIT_CPU counts seconds per process; only the cgroup's quota caps cores at once
        "CPU spin on every core (each under its CPU seconds)",
        "import os, time\nfor i in range(3):\n    if os.fork() == 0:\n        break\n"
        "t = time.process_time()\nwhile time.process_time() - t < 0.05: pass\nprint('SPUN')\n",
        lambda o: o.exit_code == 0 and o.cgroup is not None and o.cgroup.cpu_throttled > 0,
        Limits(cpu_s=2, wall_s=30, cpus=0.05),
    ),
    Attempt(
        "see the host's processes",
        "import os\npids = [p for p in os.listdir('/proc') if p.isdigit()]\n"
        "print('REFUSED only its own' if len(pids) <= 3 else 'SAW', pids)\n",
        lambda o: "REFUSED only its own" in o.stdout,
    ),
]


@pytest.fixture(scope="module", autouse=True)
def sandbox_runs() -> None:
    try:
        asyncio.run(SANDBOX.check())
    except SandboxUnavailable as exc:
        pytest.fail(f"the sandbox cannot run on this machine: {exc}")
    if SANDBOX.cgroup_problem is not None:  # this machine allows them (cgroup v1, writable): say so, loudly
        pytest.fail(f"the sandbox runs without per-run cgroups here: {SANDBOX.cgroup_problem}")


@pytest.mark.parametrize("attempt", ATTEMPTS, ids=[a.name for a in ATTEMPTS])
def test_escape_attempt_is_refused_or_contained(attempt: Attempt, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_ESCAPE_CANARY", "sk-canary-do-not-leak")
    out = asyncio.run(SANDBOX.run_python(attempt.code, {}, limits=attempt.limits))
    shown = (out.stdout.strip().splitlines() or ["(no output)"])[-1][:160]
    state = "timed out" if out.timed_out else "truncated" if out.truncated else f"exit {out.exit_code}"
    usage = (
        ""
        if out.cgroup is None
        else f" [cgroup: {out.cgroup.oom_kills} OOM kills, {out.cgroup.cpu_throttled} throttled]"
    )
    print(f"\n  escape attempt: {attempt.name:<45} -> {state}, signal {out.signal}: {shown}{usage}")
    assert attempt.contained(out), f"NOT contained: {attempt.name}: {out}"


def test_two_runs_share_no_work_dir() -> None:
    async def both() -> tuple[Outcome, Outcome]:
        writer = SANDBOX.run_python(
            "import time\nopen('/sandbox/tenant-a.txt', 'w').write('a secret')\nopen('/tmp/a', 'w').write('x')\n"
            "time.sleep(1.5)\nprint('WROTE')\n",
            {},
        )
        reader = SANDBOX.run_python(
            "import os, time\ntime.sleep(0.5)\nprint('SEES', sorted(os.listdir('/sandbox')), sorted(os.listdir('/tmp')))\n",
            {},
        )
        return await asyncio.gather(writer, reader)

    wrote, read = asyncio.run(both())
    print(f"\n  escape attempt: {'read another run`s work dir':<45} -> {read.stdout.strip()}")
    assert "WROTE" in wrote.stdout
    assert read.stdout.strip() == "SEES [] []"


def test_no_bubblewrap_means_a_refusal_naming_it() -> None:
    lone = Sandbox(bwrap="/nonexistent/bwrap")
    with pytest.raises(SandboxUnavailable, match="bubblewrap"):
        asyncio.run(lone.run_python("print(1)", {}))


def test_without_writable_cgroups_the_rlimits_still_hold(tmp_path: Path) -> None:
    bare = Sandbox(cgroup_root=str(tmp_path / "no-cgroups"))
    assert bare.cgroup_problem is not None and "no cgroup v1 'memory' hierarchy" in bare.cgroup_problem
    bomb = "x = bytearray(1024 * 1024 * 1024)\nprint('ALLOCATED')\n"
    out = asyncio.run(bare.run_python(bomb, {}, limits=SHORT))
    print(f"\n  without cgroups ({bare.cgroup_problem}): memory bomb -> exit {out.exit_code}")
    assert out.cgroup is None and out.exit_code != 0 and "ALLOCATED" not in out.stdout and "MemoryError" in out.stderr
