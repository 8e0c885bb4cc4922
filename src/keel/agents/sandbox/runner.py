"""One sandboxed process: `Sandbox.run(argv, …)` and `Sandbox.run_python(code, args, …)`.

The process runs under bubblewrap as an unprivileged uid of its own (picked per run, so the process
limit counts only its processes), in new user, PID, IPC, UTS, cgroup and network namespaces (the network
namespace has only a loopback of its own: nothing outside is reachable), with:
- a read-only root holding a read-only /usr (the interpreter and libraries) and nothing else of the host:
  no /etc, /home, /root, /work, /tmp or /var; private, size-capped tmpfs as its work dir (/sandbox) and
  /tmp; a fresh /proc (its own PID namespace) and a minimal /dev;
- every capability dropped, a new session (no terminal injection), --die-with-parent;
- a seccomp filter (seccomp.py); rlimits on CPU seconds, address space, processes, open files, file size;
- where the host allows, a cgroup of its own (cgroups.py): memory summed over its processes, pids, and
  `cpus` of CPU time per second; where it does not, the rlimits alone (`Sandbox.cgroup_problem` says why);
- an environment of PATH, HOME, LANG and only the variables the caller passes (a tool's declared secrets);
- no network, or, for a tool that lists `network: [host:port, ...]`, only those through an allow-list
  proxy on a Unix socket (netproxy.py);
- a wall clock (the whole process group is killed past it) and an output cap (killed past it, truncated).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import resource
import shutil
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from keel.agents.sandbox.cgroups import ROOT as CGROUP_ROOT
from keel.agents.sandbox.cgroups import Cgroups, RunCgroup, Usage
from keel.agents.sandbox.netproxy import HELPER, Decision, NetProxy
from keel.agents.sandbox.netproxy import MOUNT as NET_MOUNT
from keel.agents.sandbox.seccomp import SeccompUnavailable, filter_bpf

WORK_DIR = "/sandbox"
PYTHON = "/usr/bin/python3"
UID_BASE, UID_SPAN = 3_000_000, 1_000_000  # uids no account uses: one per run
# A code tool reads its arguments as `args` and prints its result; the bootstrap keeps that off the tool's code.
BOOT = (
    "import json,sys\n"
    "d=json.loads(sys.stdin.buffer.read())\n"
    "g={'__name__':'__main__','args':d['args']}\n"
    "if d.get('net'):exec(d['net'],g)\n"
    "exec(compile(d['code'],'<tool>','exec'),g)\n"
)
MAX_CODE = 256 * 1024
log = logging.getLogger("keel.agents.sandbox")


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot run here; the message names the package or setting that is missing."""


@dataclass(frozen=True, slots=True)
class Limits:
    cpu_s: int = 5
    memory_mb: int = 512  # address space (RLIMIT_AS)
    processes: int = 32
    open_files: int = 64
    file_size_mb: int = 16
    wall_s: float = 10.0
    output_bytes: int = 64 * 1024  # stdout; stderr keeps at most 8 KiB
    disk_mb: int = 64  # each of the private tmpfs (/sandbox, /tmp)
    cpus: float = 1.0  # CPU time per second of wall clock, over all its processes (the cgroup's quota)

    def rlimits(self) -> list[tuple[int, int]]:
        mb = 1024 * 1024
        return [
            (resource.RLIMIT_CPU, self.cpu_s),
            (resource.RLIMIT_AS, self.memory_mb * mb),
            (resource.RLIMIT_NPROC, self.processes),
            (resource.RLIMIT_NOFILE, self.open_files),
            (resource.RLIMIT_FSIZE, self.file_size_mb * mb),
            (resource.RLIMIT_CORE, 0),
        ]


@dataclass(frozen=True, slots=True)
class Outcome:
    exit_code: int | None  # None: killed by the sandbox (wall clock or output cap)
    stdout: str
    stderr: str
    timed_out: bool = False
    truncated: bool = False  # stdout passed the cap: cut there, the process killed
    signal: int | None = None  # the signal that ended it (a negative return code)
    seconds: float = 0.0
    network: tuple[Decision, ...] = ()  # the allow-list proxy's decisions, when the run had one
    cgroup: Usage | None = None  # what the run's cgroup counted (None: no cgroup here)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.truncated


def _limit(pairs: list[tuple[int, int]]) -> None:
    for kind, value in pairs:
        resource.setrlimit(kind, (value, value))


def _enter(cgroup: RunCgroup | None, limits: Limits, uid: int) -> None:
    """In the child before exec: join the run's cgroup (as root), set the rlimits, become `uid`."""
    if cgroup is not None:
        cgroup.join()
    _limit(limits.rlimits())
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


class Sandbox:
    def __init__(
        self, *, bwrap: str | None = None, python: str = PYTHON, ro_binds: Sequence[str] = ("/usr",),
        cgroup_root: str | None = CGROUP_ROOT,
    ) -> None:  # fmt: skip
        """`cgroup_root`: where the cgroup v1 hierarchies are mounted (None: no per-run cgroups)."""
        self.bwrap = bwrap or shutil.which("bwrap") or "bwrap"
        self.python = python
        self.ro_binds = tuple(ro_binds)
        self._checked = False
        self._cgroups = Cgroups(cgroup_root) if cgroup_root is not None and os.geteuid() == 0 else None
        if cgroup_root is None:
            self.cgroup_problem: str | None = "per-run cgroups turned off"
        elif self._cgroups is None:
            self.cgroup_problem = "not running as root: cannot make per-run cgroups"
        else:
            self.cgroup_problem = self._cgroups.problem
        if self.cgroup_problem is not None and cgroup_root is not None:
            log.warning("sandbox: no per-run cgroups (%s); runs keep their rlimits only", self.cgroup_problem)

    def argv(
        self, command: Sequence[str], seccomp_fd: int, tmpfs_mb: int = 64, net_dir: str | None = None
    ) -> list[str]:
        """bubblewrap's command line around `command` (`net_dir`: the allow-list proxy's socket directory)."""
        out = [self.bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
        for path in self.ro_binds:
            out += ["--ro-bind", path, path]
        for name in ("lib", "lib64", "bin", "sbin"):  # merged /usr: the root's links
            if os.path.islink(f"/{name}"):
                out += ["--symlink", os.readlink(f"/{name}"), f"/{name}"]
        size = str(tmpfs_mb * 1024 * 1024)
        out += [
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--size",
            size,
            "--tmpfs",
            "/tmp",
            "--size",
            size,
            "--tmpfs",
            WORK_DIR,
        ]
        if net_dir is not None:
            out += ["--ro-bind", net_dir, NET_MOUNT]
        out += [
            "--remount-ro",
            "/",
            "--chdir",
            WORK_DIR,
            "--hostname",
            "sandbox",
            "--seccomp",
            str(seccomp_fd),
            "--",
            *command,
        ]
        return out

    def _prepare(self) -> bytes:
        if shutil.which(self.bwrap) is None:
            raise SandboxUnavailable(
                f"bubblewrap ('{self.bwrap}') is not installed: apt-get install bubblewrap. "
                "Keel refuses to run code tools and stdio MCP servers without it."
            )
        try:
            return filter_bpf()
        except SeccompUnavailable as exc:
            raise SandboxUnavailable(str(exc)) from None

    async def check(self) -> None:
        """Run `true` in the sandbox once; SandboxUnavailable says why it cannot run here."""
        if self._checked:
            return
        out = await self.run(["/usr/bin/true"], limits=Limits(wall_s=10))
        if out.exit_code != 0:
            why = out.stderr.strip()[:500]
            raise SandboxUnavailable(
                f"bubblewrap could not start a sandbox ({why}): it needs unprivileged user namespaces "
                "(sysctl kernel.unprivileged_userns_clone=1 and user.max_user_namespaces > 0)"
            )
        self._checked = True

    async def run(
        self,
        command: Sequence[str],
        *,
        stdin: bytes = b"",
        env: Mapping[str, str] | None = None,
        limits: Limits = Limits(),
        network: Sequence[str] = (),
    ) -> Outcome:
        """Run `command` in the sandbox; with `network` (host:port entries), behind the allow-list proxy."""
        if not network:
            return await self._run(command, stdin, env, limits, None)
        proxy = NetProxy(network)
        await proxy.start()
        try:
            out = await self._run(command, stdin, env, limits, proxy.directory)
        finally:
            await proxy.aclose()
        return dataclasses.replace(out, network=tuple(proxy.decisions))

    async def _run(
        self, command: Sequence[str], stdin: bytes, env: Mapping[str, str] | None, limits: Limits, net_dir: str | None
    ) -> Outcome:
        bpf = self._prepare()
        uid = UID_BASE + random.randrange(UID_SPAN)
        cg = await self.cgroup(limits)
        try:
            out = await self._spawn(command, stdin, env, limits, net_dir, bpf, uid, cg)
        finally:
            usage = None
            if cg is not None:
                usage = await asyncio.to_thread(cg.usage)
                await asyncio.to_thread(cg.remove)
        return dataclasses.replace(out, cgroup=usage)

    async def cgroup(self, limits: Limits) -> RunCgroup | None:
        """A new cgroup with `limits` for one run or one stdio MCP server's life (None where cgroups cannot
        be made here: the rlimits still hold). Its owner removes it (`RunCgroup.remove`, off the loop)."""
        if self._cgroups is None or self.cgroup_problem is not None:
            return None
        try:
            return await asyncio.to_thread(self._cgroups.create, limits.memory_mb, limits.processes, limits.cpus)
        except OSError as exc:  # the rlimits still hold; say so loudly
            log.warning("sandbox: could not make this run's cgroup (%s); rlimits only", exc)
            return None

    async def _spawn(
        self, command: Sequence[str], stdin: bytes, env: Mapping[str, str] | None, limits: Limits,
        net_dir: str | None, bpf: bytes, uid: int, cg: RunCgroup | None,
    ) -> Outcome:  # fmt: skip
        fd = os.memfd_create("keel-seccomp", 0)
        try:
            os.write(fd, bpf)
            os.lseek(fd, 0, os.SEEK_SET)
            base = {"PATH": "/usr/bin:/bin", "HOME": WORK_DIR, "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
            started = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                *self.argv(command, fd, limits.disk_mb, net_dir),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={**base, **(env or {})},
                pass_fds=(fd,),
                process_group=0,
                preexec_fn=lambda: _enter(cg, limits, uid),
            )
        except FileNotFoundError as exc:
            raise SandboxUnavailable(f"bubblewrap is not installed ({exc}): apt-get install bubblewrap") from None
        finally:
            os.close(fd)
        return await _finish(proc, stdin, limits, started)

    async def run_python(
        self,
        code: str,
        args: object,
        *,
        env: Mapping[str, str] | None = None,
        limits: Limits = Limits(),
        network: Sequence[str] = (),
    ) -> Outcome:
        """Run a code tool: `code` sees its arguments as `args`; what it prints is its result. With
        `network`, its globals also hold `connect(host, port)` and `fetch(url, ...)` (netproxy.HELPER)."""
        import orjson

        if len(code) > MAX_CODE:
            raise ValueError(f"a code tool's code is at most {MAX_CODE} characters")
        stdin = orjson.dumps({"code": code, "args": args, "net": HELPER if network else None})
        return await self.run(
            [self.python, "-I", "-S", "-c", BOOT], stdin=stdin, env=env, limits=limits, network=network
        )


async def _finish(proc: asyncio.subprocess.Process, stdin: bytes, limits: Limits, started: float) -> Outcome:
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None

    async def feed(pipe: asyncio.StreamWriter) -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            pipe.write(stdin)
            await pipe.drain()
            pipe.close()

    async def read(stream: asyncio.StreamReader, limit: int, kill: bool) -> tuple[bytes, bool]:
        """Up to `limit` bytes; past it, kill (stdout) and keep draining to the end (the pipe closes)."""
        got, over = bytearray(), False
        while chunk := await stream.read(65536):
            if not over:
                got += chunk
                if len(got) > limit:
                    over = True
                    if kill:
                        _kill(proc)
        return bytes(got[:limit]), over

    tasks = [
        asyncio.ensure_future(read(proc.stdout, limits.output_bytes, True)),
        asyncio.ensure_future(read(proc.stderr, 8192, False)),
        asyncio.ensure_future(feed(proc.stdin)),
    ]
    timed_out = False
    try:
        await asyncio.wait_for(asyncio.shield(asyncio.gather(proc.wait(), *tasks)), limits.wall_s)
    except TimeoutError:
        timed_out = True
    finally:
        if proc.returncode is None:
            _kill(proc)
        await proc.wait()
        with contextlib.suppress(TimeoutError):  # the pipes end with the sandbox's last process
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5.0)
    out, truncated = _read(tasks[0])
    err, _ = _read(tasks[1])
    code = proc.returncode
    killed = timed_out or truncated
    # bwrap exits 128+N when its child died of signal N (CPU limit: SIGKILL after SIGXCPU)
    sig = -code if code is not None and code < 0 else (code - 128 if code is not None and code > 128 else None)
    return Outcome(
        None if killed else code,
        out.decode("utf-8", "replace"),
        err.decode("utf-8", "replace"),
        timed_out,
        truncated,
        sig,
        time.monotonic() - started,
    )


def _read(task: asyncio.Future[tuple[bytes, bool] | None]) -> tuple[bytes, bool]:
    if task.done() and not task.cancelled() and task.exception() is None:
        got = task.result()
        if got is not None:
            return got
    return b"", False


def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
