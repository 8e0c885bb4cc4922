"""`keel tenants create|list|update`. A tenant may be restricted to provider regions (data residency)."""

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
    create.add_argument("--regions", help="comma-separated provider regions its calls may use (default: any)")
    create.add_argument("--json", action="store_true")
    create.set_defaults(run=run_create)
    ls = verbs.add_parser("list", help="list tenants")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(run=run_list)
    update = verbs.add_parser("update", help="change a tenant's regions; applies everywhere within 1 s")
    update.add_argument("name")
    which = update.add_mutually_exclusive_group(required=True)
    which.add_argument("--regions", help="comma-separated provider regions its calls may use")
    which.add_argument("--any-region", action="store_true", help="lift the region restriction")
    update.add_argument("--json", action="store_true")
    update.set_defaults(run=run_update)


def _regions(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    regions = tuple(r.strip() for r in text.split(",") if r.strip())
    if not regions:
        raise Failure("--regions names no region; to allow any region, leave it out (or use --any-region)")
    return regions


def _shown(regions: tuple[str, ...] | None) -> str:
    return "any" if regions is None else ",".join(regions)


def run_create(args: argparse.Namespace) -> int:
    regions = _regions(args.regions)
    with store(args) as s:
        row = s.create_tenant(args.name, regions)
    if args.json:
        emit_json(asdict(row))
    elif row.regions is None:
        print(f"created tenant {row.name}")
    else:
        print(f"created tenant {row.name}, restricted to regions {_shown(row.regions)}")
    return 0


def run_update(args: argparse.Namespace) -> int:
    regions = None if args.any_region else _regions(args.regions)
    with store(args) as s:
        row = s.set_tenant_regions(args.name, regions)
    if row is None:
        raise Failure(f"no tenant '{args.name}'; see `keel tenants list`")
    if args.json:
        emit_json(asdict(row))
    else:
        print(f"tenant {row.name} may use regions: {_shown(row.regions)}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    with store(args) as s:
        rows = s.list_tenants()
    if args.json:
        emit_json([asdict(r) for r in rows])
    else:
        table(["name", "regions", "created"], [(r.name, _shown(r.regions), when(r.created_at)) for r in rows])
    return 0
