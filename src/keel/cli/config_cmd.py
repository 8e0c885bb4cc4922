"""`keel config check` and `keel init`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from keel import config
from keel.cli.output import Failure


def register(p: argparse.ArgumentParser) -> None:
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    check = verbs.add_parser("check", help="validate keel.yaml and print every problem")
    check.add_argument(
        "--workers", type=int, default=1, help="also check for `keel serve --workers N`: state kept per process"
    )
    check.set_defaults(run=run_check)


def register_init(init: argparse.ArgumentParser) -> None:
    init.add_argument("path", nargs="?", default=config.DEFAULT_PATH)
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    init.set_defaults(run=run_init)


def run_check(args: argparse.Namespace) -> int:
    from keel.cli.serve import per_process_state

    cfg = config.load(args.config)  # ConfigError → report, exit 2
    found = config.warnings(cfg)
    source = args.config or os.environ.get("KEEL_CONFIG", config.DEFAULT_PATH)
    if found:  # allowed, so not an error: the file still checks
        head = f"{source}: {len(found)} warning{'s' if len(found) != 1 else ''}"
        print("\n".join([head, *map(str, found)]), file=sys.stderr)
    refusals, per_worker = per_process_state(cfg, 0, args.workers)  # (limit overrides in the store: serve checks)
    for line in per_worker:
        print(f"{source}: --workers {args.workers}: {line}", file=sys.stderr)
    if refusals:
        raise Failure(f"--workers {args.workers}: " + "; ".join(refusals))
    print(f"ok: {len(cfg.providers)} provider(s), {len(cfg.models)} model alias(es), storage {cfg.storage.url}")
    return 0


def run_init(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if path.exists() and not args.force:
        raise Failure(f"{path} already exists; pass --force to overwrite it")
    path.write_text(config.STARTER)
    print(f"wrote {path}; check it with `keel config check`")
    return 0
