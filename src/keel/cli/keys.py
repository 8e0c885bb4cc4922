"""`keel keys create|list|revoke`. A new key is printed once; only its hash is stored."""

from __future__ import annotations

import argparse
import sys
import time

from keel.cli.audited import record
from keel.cli.context import store
from keel.cli.output import Failure, emit_json, table, when
from keel.keys.auth import issue_key, key_view


def register(p: argparse.ArgumentParser) -> None:
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    create = verbs.add_parser("create", help="issue a key (printed once)")
    create.add_argument("--tenant", required=True)
    create.add_argument("--user", help="attribute every call of this key to a user")
    create.add_argument("--name", help="a label to recognise the key by")
    create.add_argument("--team", help="the tenant's team it belongs to (limits per team; keel teams add)")
    create.add_argument("--models", help="comma-separated aliases this key may use (default: all)")
    create.add_argument("--priority", type=int, default=0, help="its calls' priority when a target is saturated")
    create.add_argument("--max-priority", type=int, help="the most x-keel-priority may ask for (default: --priority)")
    create.add_argument("--json", action="store_true")
    create.set_defaults(run=run_create)
    ls = verbs.add_parser("list", help="list keys (never the keys themselves)")
    ls.add_argument("--tenant")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(run=run_list)
    revoke = verbs.add_parser("revoke", help="revoke a key by id; refused everywhere within 1 s")
    revoke.add_argument("key_id")
    revoke.add_argument("--json", action="store_true")
    revoke.set_defaults(run=run_revoke)


def run_create(args: argparse.Namespace) -> int:

    models = tuple(m.strip() for m in args.models.split(",") if m.strip()) if args.models else None
    with store(args) as s:
        if args.team is not None and args.team not in {t.name for t in s.list_teams(args.tenant)}:
            raise Failure(f"no team '{args.team}' in tenant '{args.tenant}'; add it with `keel teams add`")
        issued = issue_key(
            s,
            args.tenant,
            name=args.name,
            user=args.user,
            models=models,
            priority=args.priority,
            max_priority=args.max_priority,
            team=args.team,
        )
        record(s, "key.create", issued.row.id, tenant=issued.row.tenant, after=key_view(issued.row))
    if args.json:
        emit_json({"key": issued.key, **key_view(issued.row)})
    else:
        print(issued.key)
        print(f"id {issued.row.id} for tenant {issued.row.tenant}; this key is shown only once", file=sys.stderr)
    return 0


def run_list(args: argparse.Namespace) -> int:

    with store(args) as s:
        rows = s.list_keys(args.tenant)
    if args.json:
        emit_json([key_view(k) for k in rows])
        return 0
    table(
        ["id", "tenant", "team", "prefix", "name", "user", "models", "created", "revoked"],
        [
            (
                k.id,
                k.tenant,
                k.team or "",
                k.prefix + "…",
                k.name,
                k.user,
                ",".join(k.models) if k.models else "all",
                when(k.created_at),
                when(k.revoked_at) if k.revoked_at else "",
            )
            for k in rows
        ],
    )
    return 0


def run_revoke(args: argparse.Namespace) -> int:

    with store(args) as s:
        row = s.revoke_key(args.key_id, time.time())
        if row is not None:
            record(s, "key.revoke", row.id, tenant=row.tenant, after={"revoked_at": row.revoked_at})
    if row is None:
        raise Failure(f"no key with id '{args.key_id}'; see `keel keys list`")
    if args.json:
        emit_json(key_view(row))
    else:
        print(f"revoked {row.id} at {when(row.revoked_at)}")
    return 0
