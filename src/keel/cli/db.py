"""`keel db migrate|sweep`."""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict

from keel.cli.context import load_config, store
from keel.cli.output import emit_json
from keel.traces.retention import RetentionPolicy, sweep


def register(p: argparse.ArgumentParser) -> None:
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    verbs.add_parser("migrate", help="apply pending migrations").set_defaults(run=run_migrate)
    sw = verbs.add_parser("sweep", help="delete traces past retention (rollups are kept) and orphan payload blobs")
    sw.add_argument("--json", action="store_true")
    sw.set_defaults(run=run_sweep)


def run_migrate(args: argparse.Namespace) -> int:
    with store(args, migrate=False) as s:
        applied = s.migrate()
    print("\n".join(f"applied {name}" for name in applied) if applied else "up to date")
    return 0


def run_sweep(args: argparse.Namespace) -> int:
    from keel.traces.builder import blobs_from  # the traces capability's imports only for this verb

    cfg = load_config(args)
    policy = RetentionPolicy.from_config(cfg.retention)
    blobs = blobs_from(cfg)
    try:
        with store(args) as s:
            report = sweep(s, blobs, policy, time.time())
    finally:
        blobs.close()
    if args.json:
        emit_json(asdict(report))
        return 0
    if not policy.deletes_traces:
        print("no retention configured (retention.traces_days): traces are kept")
    for tenant, n in report.by_tenant.items():
        print(f"{'tenants on the default' if tenant == '*' else f'tenant {tenant}'}: {n} traces deleted")
    print(
        f"deleted {report.traces} traces, {report.blobs} payload blobs, {report.orphan_blobs} orphan blobs,"
        f" {report.responses} stored responses"
    )
    return 0
