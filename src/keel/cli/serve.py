"""`keel serve`: check the config, open and migrate the store, then run the gateway.

`--workers N` (N > 1) runs N gateway processes on one listening socket: the parent checks the config,
migrates and bootstraps the store once, binds the socket, then forks the workers; each builds its own
Runtime after the fork (no thread or event loop exists before it) and runs uvicorn on the inherited
socket. The parent supervises: a worker that dies is started again (with a backoff when it keeps
dying), and SIGTERM or SIGINT is passed to every worker, whose drain (traces flushed) it waits for.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from keel import config as keel_config
from keel.cli.context import load_config
from keel.cli.output import Failure

if TYPE_CHECKING:  # `keel config check` imports this module for per_process_state: no store, no keys for it
    from keel.store.protocols import Store

log = logging.getLogger("keel.serve")
MAX_WORKERS = 64
GRACEFUL_S = 30  # uvicorn's wait for calls in flight at shutdown
DRAIN_S = GRACEFUL_S + 35  # a worker's whole shutdown: calls in flight, then the trace writer's drain (30 s)
RESTART_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)  # after the 1st, 2nd, ... death in a row
STEADY_S = 30.0  # a worker that ran this long before dying starts again without delay
WORKER_HEADER = "x-keel-worker"  # with --workers > 1: the pid of the process that answered


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="override server.host")
    p.add_argument("--port", type=int, help="override server.port")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="gateway processes sharing the listening socket (default 1); state that is per process: see README",
    )
    p.set_defaults(run=run)


def bootstrap(store: Store) -> None:
    """On an empty store, create tenant 'default' and print one key, so the first call just works."""
    from keel.keys.auth import issue_key

    if store.list_tenants():
        return
    store.create_tenant("default")
    issued = issue_key(store, "default", name="bootstrap")
    print(
        f"keel: created tenant 'default' and key {issued.key} (shown once; `keel keys list` shows its id)",
        file=sys.stderr,
    )


def _redacted(url: str) -> str:
    """The storage URL without its password, fit for a log line."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def uvicorn_options(cfg: keel_config.Config, args: argparse.Namespace) -> dict[str, Any]:
    """uvicorn's settings: the one place they are built, for the single process and for each worker.

    The HTTP protocol is httptools within the server.* bounds (keel.api.connections); call this in the
    process that serves (it raises that process's open-file limit to fit server.max_connections).
    """
    from keel.api.connections import uvicorn_options as bounded

    return {
        "loop": "uvloop",
        "access_log": False,
        "log_level": args.log_level,
        "timeout_graceful_shutdown": GRACEFUL_S,
        **bounded(cfg.server),  # http: the bounded httptools protocol; timeout_keep_alive
    }


def tune_gc() -> None:
    # Long-lived start-up objects leave the collector's view, and young collections run less often:
    # full collections over them were the gateway's worst latency tail.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def run(args: argparse.Namespace) -> int:
    # numpy (semantic cache) loads later: one BLAS thread per call, since the event loop shares the cores
    # and two spinning OpenBLAS threads made one embedding 5x slower at p50 (bench/README.md). Overridable.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    import uvicorn

    from keel.api.app import create_app
    from keel.runtime.components import Runtime

    cfg = load_config(args)  # a bad config stops here, before anything starts
    if not 1 <= args.workers <= MAX_WORKERS:
        raise Failure(f"--workers must be between 1 and {MAX_WORKERS}, not {args.workers}")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for issue in keel_config.warnings(cfg):
        logging.getLogger("keel.config").warning("%s: %s (fix: %s)", issue.path, issue.message, issue.fix)
    host = args.host or cfg.server.host
    port = args.port if args.port is not None else cfg.server.port
    if args.workers > 1:
        return serve_workers(cfg, args, host, port)
    runtime = Runtime.build(cfg)
    bootstrap(runtime.store)
    print(f"keel: serving on http://{host}:{port}/v1 (storage {_redacted(cfg.storage.url)})", file=sys.stderr)
    tune_gc()
    # uvicorn drains on SIGTERM (the lifespan flushes traces), then re-raises the signal: make that a clean exit.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(create_app(runtime), host=host, port=port, **uvicorn_options(cfg, args))
    return 0


# ---- several processes --------------------------------------------------------------------------


def per_process_state(cfg: keel_config.Config, overrides: int, workers: int) -> tuple[list[str], list[str]]:
    """(refusals, warnings) for state each of `workers` processes would keep on its own."""
    if workers <= 1:
        return [], []
    refusals, warnings = [], []
    if not cfg.redis.url:
        if cfg.limits.defaults or overrides:
            refusals.append(
                f"limits are counted in memory (no redis.url), so each of the {workers} workers would count its own "
                f"share and allow {workers}x every rpm, tpm and budget; fix: set redis.url (limits and breakers "
                "shared through Redis), or run one worker"
            )
        else:
            warnings.append(
                "no redis.url: circuit breakers are per worker (each opens after its own failures), and a limit "
                "set later through the admin API would be counted per worker; set redis.url to share them"
            )
    capped = sorted({f"{t.provider}/{t.model}" for a in cfg.models.values() for t in a.targets if t.max_concurrency})
    if capped:
        warnings.append(f"max_concurrency of {', '.join(capped)} holds per worker: {workers} workers allow {workers}x")
    if cfg.cache.url == "memory://":
        warnings.append("cache.url is memory://: each worker has its own cache (a hit in one is a miss in another)")
    return refusals, warnings


def serve_workers(cfg: keel_config.Config, args: argparse.Namespace, host: str, port: int) -> int:
    from keel.store.open import open_store

    store = open_store(cfg.storage.url)  # migrations run here, once, before any worker starts
    try:
        bootstrap(store)
        overrides = len(store.list_limits())
    finally:
        store.close()
    refusals, warnings = per_process_state(cfg, overrides, args.workers)
    for warning in warnings:
        log.warning("--workers %d: %s", args.workers, warning)
    if refusals:
        raise Failure(f"--workers {args.workers}: " + "; ".join(refusals))
    sock = listen(host, port)
    if threading.active_count() > 1:  # a thread started by the store would be lost in the children
        log.warning(
            "%d threads run before the workers fork; they do not exist in the workers", threading.active_count()
        )
    print(
        f"keel: serving on http://{host}:{port}/v1 with {args.workers} workers (storage {_redacted(cfg.storage.url)})",
        file=sys.stderr,
    )
    sys.stderr.flush()
    sys.stdout.flush()
    return Supervisor(args.workers, lambda: _worker(cfg, args, sock), sock).run()


def listen(host: str, port: int) -> socket.socket:
    """The listening socket the workers share, bound as uvicorn binds its own."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that name their protocol, and without it
    # a keep-alive answer written in two parts waits ~40 ms for the client's delayed ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise Failure(
            f"cannot listen on {host}:{port} ({exc.strerror}); fix: free the port or set server.port"
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _worker(cfg: keel_config.Config, args: argparse.Namespace, sock: socket.socket) -> int:
    """A worker process, after the fork: its own runtime, uvicorn on the shared socket. Returns its exit code."""
    import uvicorn

    from keel.api.app import create_app
    from keel.runtime.components import Runtime

    os.setpgid(0, 0)  # a terminal's Ctrl-C reaches the parent only, which forwards one SIGTERM
    _die_with_parent()
    runtime = Runtime.build(cfg)
    tune_gc()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # uvicorn re-raises it after the drain
    headers = [(WORKER_HEADER, str(os.getpid()))]  # uvicorn adds it as it adds `server`: no per-call code
    server = uvicorn.Server(uvicorn.Config(create_app(runtime), headers=headers, **uvicorn_options(cfg, args)))
    server.run(sockets=[sock])
    return 0


def _die_with_parent() -> None:
    """SIGTERM this process when the supervisor dies (Linux), so no orphan keeps serving."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before prctl
            os.kill(os.getpid(), signal.SIGTERM)


@dataclass
class _Slot:
    pid: int | None = None
    started: float = 0.0
    deaths: int = 0  # in a row, each within STEADY_S of its start
    restart_at: float | None = None  # monotonic


@dataclass
class Supervisor:
    """Forks `n` workers, starts again any that dies, and on SIGTERM/SIGINT drains them all."""

    n: int
    target: Any  # () -> int: the worker's body, run in the child; its return value is the exit code
    sock: socket.socket | None = None  # the shared listening socket: closed here when stopping
    slots: list[_Slot] = field(default_factory=list)
    SIGNALS = frozenset({signal.SIGCHLD, signal.SIGTERM, signal.SIGINT})

    def run(self) -> int:
        signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so SIGCHLD is delivered to sigtimedwait
        signal.pthread_sigmask(signal.SIG_BLOCK, self.SIGNALS)
        self.slots = [_Slot() for _ in range(self.n)]
        for slot in self.slots:
            self._spawn(slot)
        while True:
            due = [s.restart_at for s in self.slots if s.restart_at is not None]
            timeout = max(0.0, min(due) - time.monotonic()) if due else 3600.0
            info = signal.sigtimedwait(self.SIGNALS, timeout)
            if info is not None and info.si_signo in (signal.SIGTERM, signal.SIGINT):
                return self._stop(signal.Signals(info.si_signo))
            self._reap()
            now = time.monotonic()
            for slot in self.slots:
                if slot.restart_at is not None and slot.restart_at <= now:
                    self._spawn(slot)

    def _spawn(self, slot: _Slot) -> None:
        slot.restart_at = None
        slot.started = time.monotonic()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                signal.pthread_sigmask(signal.SIG_SETMASK, set())
                for sig in self.SIGNALS:
                    signal.signal(sig, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.default_int_handler)
                code = self.target()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
            except BaseException:
                log.exception("worker %d failed", os.getpid())
            finally:
                with contextlib.suppress(BaseException):
                    logging.shutdown()
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        slot.pid = pid
        log.info("worker %d started (pid %d)", self.slots.index(slot), pid)

    def _reap(self) -> list[tuple[_Slot, int]]:
        """Collect the workers that ended; schedule their restart. Returns (slot, wait status) of each."""
        ended = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            slot = next((s for s in self.slots if s.pid == pid), None)
            if slot is None:
                continue
            slot.pid = None
            ended.append((slot, status))
            lived = time.monotonic() - slot.started
            slot.deaths = 1 if lived >= STEADY_S else slot.deaths + 1
            delay = 0.0 if lived >= STEADY_S else RESTART_DELAYS[min(slot.deaths, len(RESTART_DELAYS)) - 1]
            slot.restart_at = time.monotonic() + delay
            log.error(
                "worker %d (pid %d) %s after %.1f s; starting it again in %.1f s",
                self.slots.index(slot),
                pid,
                _how(status),
                lived,
                delay,
            )
        return ended

    def _stop(self, sig: signal.Signals) -> int:
        """Pass the signal on (as SIGTERM: a drain) and wait for every worker; 0 when all drained cleanly."""
        log.info("%s: stopping %d workers", sig.name, len(self._running()))
        for slot in self.slots:
            slot.restart_at = None
        if self.sock is not None:  # else the kernel keeps queueing connections no worker will accept
            self.sock.close()
        self._signal_all(signal.SIGTERM)
        clean = True
        deadline = time.monotonic() + DRAIN_S
        while True:
            clean = self._collect() and clean
            if not self._running():
                return 0 if clean else 1
            left = deadline - time.monotonic()
            if left <= 0:
                log.error("workers %s did not stop within %d s; killing them", self._running(), DRAIN_S)
                self._signal_all(signal.SIGKILL)
                deadline, clean = time.monotonic() + 5, False
                continue
            info = signal.sigtimedwait(self.SIGNALS, min(left, 1.0))
            if info is not None and info.si_signo == signal.SIGINT:  # a second Ctrl-C: force exit, no drain
                self._signal_all(signal.SIGINT)

    def _running(self) -> list[int]:
        return [s.pid for s in self.slots if s.pid is not None]

    def _signal_all(self, sig: signal.Signals) -> None:
        for pid in self._running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _collect(self) -> bool:
        """Reap the workers that have ended while stopping; False if one did not exit cleanly."""
        clean = True
        for slot in self.slots:
            if slot.pid is None:
                continue
            try:
                done, status = os.waitpid(slot.pid, os.WNOHANG)
            except ChildProcessError:
                done, status = slot.pid, 0
            if not done:
                continue
            if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
                clean = False
                log.error("worker pid %d %s while stopping", slot.pid, _how(status))
            slot.pid = None
        return clean


def _how(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with {os.waitstatus_to_exitcode(status)}"
