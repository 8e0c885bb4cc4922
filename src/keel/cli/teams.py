"""`keel teams add|list|remove`: a tenant's teams (keys and users belong to one; limits per team)."""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import asdict

from keel.cli.output import emit_json, table, when
from keel.cli.users import directory


def register(p: argparse.ArgumentParser) -> None:
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    add = verbs.add_parser("add", help="add a team to a tenant")
    add.add_argument("name")
    add.add_argument("--tenant", required=True)
    add.add_argument("--json", action="store_true")
    add.set_defaults(run=run_add)
    ls = verbs.add_parser("list", help="list teams")
    ls.add_argument("--tenant")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(run=run_list)
    remove = verbs.add_parser("remove", help="remove a team")
    remove.add_argument("name")
    remove.add_argument("--tenant", required=True)
    remove.add_argument("--json", action="store_true")
    remove.set_defaults(run=run_remove)


def run_add(args: argparse.Namespace) -> int:
    with directory(args) as d:
        row = asyncio.run(d.add_team(args.tenant, args.name))
    if args.json:
        emit_json(asdict(row))
    else:
        print(f"added team {row.name} to tenant {row.tenant}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    with directory(args) as d:
        rows = asyncio.run(d.list_teams(args.tenant))
    if args.json:
        emit_json([asdict(t) for t in rows])
    else:
        table(["tenant", "name", "created"], [(t.tenant, t.name, when(t.created_at)) for t in rows])
    return 0


def run_remove(args: argparse.Namespace) -> int:
    with directory(args) as d:
        asyncio.run(d.remove_team(args.tenant, args.name))
    if args.json:
        emit_json({"tenant": args.tenant, "name": args.name, "deleted": True})
    else:
        print(f"removed team {args.name} from tenant {args.tenant}")
    return 0
