"""`keel db migrate`."""

from __future__ import annotations

import argparse

from keel.cli.context import store


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("db", help="database maintenance")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    verbs.add_parser("migrate", help="apply pending migrations").set_defaults(run=run_migrate)


def run_migrate(args: argparse.Namespace) -> int:
    with store(args, migrate=False) as s:
        applied = s.migrate()
    print("\n".join(f"applied {name}" for name in applied) if applied else "up to date")
    return 0
