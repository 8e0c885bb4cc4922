"""`keel tenants create|list`."""

from __future__ import annotations

import argparse
from dataclasses import asdict

from keel.cli.context import store
from keel.cli.output import Failure, emit_json, table, when


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("tenants", help="manage tenants")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    create = verbs.add_parser("create", help="create a tenant")
    create.add_argument("name")
    create.add_argument("--json", action="store_true")
    create.set_defaults(run=run_create)
    ls = verbs.add_parser("list", help="list tenants")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(run=run_list)


def run_create(args: argparse.Namespace) -> int:
    s = store(args)
    try:
        row = s.create_tenant(args.name)
    except ValueError as exc:
        raise Failure(str(exc)) from None
    finally:
        s.close()
    if args.json:
        emit_json(asdict(row))
    else:
        print(f"created tenant {row.name}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    s = store(args)
    try:
        rows = s.list_tenants()
    finally:
        s.close()
    if args.json:
        emit_json([asdict(r) for r in rows])
    else:
        table(["name", "created"], [(r.name, when(r.created_at)) for r in rows])
    return 0
