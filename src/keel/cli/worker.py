"""`keel worker [--queues q1,q2] [--concurrency N]`: job workers alone, no HTTP listener.

Same config file as `keel serve`; the whole runtime is built (so handlers call the gateway pipeline with
its limits, cache, routing and traces) and its background workers run, the job pool among them. SIGTERM
or SIGINT drains: running jobs may finish within `jobs.grace_s`, the rest are handed back at once.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from keel.cli.context import load_config
from keel.cli.output import Failure
from keel.config import Config


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("--queues", help="comma-separated queues to take jobs from (default: jobs.queues)")
    p.add_argument("--concurrency", type=int, help="jobs run at once (default: jobs.workers)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    update: dict[str, object] = {"enabled": True}
    if args.queues is not None:
        queues = [q.strip() for q in args.queues.split(",") if q.strip()]
        if not queues:
            raise Failure("--queues needs at least one queue name, e.g. --queues default,batch")
        update["queues"] = queues
    if args.concurrency is not None:
        if not 1 <= args.concurrency <= 1024:
            raise Failure(f"--concurrency must be between 1 and 1024, not {args.concurrency}")
        update["workers"] = args.concurrency
    cfg = cfg.model_copy(update={"jobs": cfg.jobs.model_copy(update=update)})
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve(cfg))
    return 0


async def _serve(cfg: Config) -> None:
    from keel.jobs.registry import JobRegistry
    from keel.runtime.components import Runtime

    runtime = Runtime.build(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await runtime.start()
    kinds = ", ".join(runtime.get(JobRegistry).kinds) or "(none registered)"
    jc = cfg.jobs
    print(
        f"keel: worker running: queues {','.join(jc.queues)}, concurrency {jc.workers}, kinds {kinds}",
        file=sys.stderr,
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        print("keel: worker draining", file=sys.stderr, flush=True)
        await runtime.aclose()
        print("keel: worker stopped", file=sys.stderr, flush=True)
