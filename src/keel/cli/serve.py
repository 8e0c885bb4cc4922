"""`keel serve`: check the config, open and migrate the store, then run the gateway."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
from urllib.parse import urlsplit, urlunsplit

from keel import config as keel_config
from keel.cli.context import load_config
from keel.keys import issue_key
from keel.store.protocols import Store


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run the gateway")
    p.add_argument("--host", help="override server.host")
    p.add_argument("--port", type=int, help="override server.port")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(run=run)


def bootstrap(store: Store) -> None:
    """On an empty store, create tenant 'default' and print one key, so the first call just works."""
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


def run(args: argparse.Namespace) -> int:
    # numpy (semantic cache) loads later: one BLAS thread per call, since the event loop shares the cores
    # and two spinning OpenBLAS threads made one embedding 5x slower at p50 (bench/README.md). Overridable.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    import uvicorn

    from keel.api.app import create_app
    from keel.api.connections import uvicorn_options
    from keel.runtime import Runtime

    cfg = load_config(args)  # a bad config stops here, before anything starts
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for issue in keel_config.warnings(cfg):
        logging.getLogger("keel.config").warning("%s: %s (fix: %s)", issue.path, issue.message, issue.fix)
    runtime = Runtime.build(cfg)
    bootstrap(runtime.store)
    host = args.host or cfg.server.host
    port = args.port if args.port is not None else cfg.server.port
    print(f"keel: serving on http://{host}:{port}/v1 (storage {_redacted(cfg.storage.url)})", file=sys.stderr)
    # Long-lived start-up objects leave the collector's view, and young collections run less often:
    # full collections over them were the gateway's worst latency tail.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    # uvicorn drains on SIGTERM (the lifespan flushes traces), then re-raises the signal: make that a clean exit.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(
        create_app(runtime),
        host=host,
        port=port,
        loop="uvloop",
        **uvicorn_options(cfg.server),  # httptools, within the server.* bounds
        access_log=False,
        log_level=args.log_level,
        timeout_graceful_shutdown=30,
    )
    return 0
