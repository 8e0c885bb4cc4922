"""`keel tokens create|list|revoke`: personal access tokens (`keel_pat_…`) for the admin API. A new token is
printed once; only its hash is stored. Scopes (permission names) narrow what the user may do with it."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from keel.cli.output import Failure, emit_json, table, when
from keel.cli.users import directory
from keel.tenancy.directory import token_view

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def register(p: argparse.ArgumentParser) -> None:
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    create = verbs.add_parser("create", help="issue a token for a user (printed once)")
    create.add_argument("--user", required=True)
    create.add_argument("--name", help="a label to recognise the token by")
    create.add_argument("--scopes", help="comma-separated permissions it is limited to (default: all the user's)")
    create.add_argument("--expires-in", help="a lifetime such as 30d, 12h (default: none)")
    create.add_argument("--json", action="store_true")
    create.set_defaults(run=run_create)
    ls = verbs.add_parser("list", help="list tokens (never the tokens themselves)")
    ls.add_argument("--user")
    ls.add_argument("--tenant")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(run=run_list)
    revoke = verbs.add_parser("revoke", help="revoke a token by id")
    revoke.add_argument("token_id")
    revoke.add_argument("--json", action="store_true")
    revoke.set_defaults(run=run_revoke)


def _lifetime(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        seconds = float(text[:-1]) * UNITS[text[-1]] if text[-1:] in UNITS else float(text)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise Failure(f"--expires-in must be a lifetime such as 30d, 12h or 3600, not {text!r}")
    return seconds


def run_create(args: argparse.Namespace) -> int:
    life = _lifetime(args.expires_in)
    scopes = tuple(s.strip() for s in args.scopes.split(",") if s.strip()) if args.scopes else None
    with directory(args) as d:
        issued = asyncio.run(
            d.issue_token(
                args.user, scopes=scopes, name=args.name, expires_at=None if life is None else time.time() + life
            )
        )
    if args.json:
        emit_json({"token": issued.token, **token_view(issued.row)})
    else:
        print(issued.token)
        print(f"id {issued.row.id} for user {issued.row.user_id}; this token is shown only once", file=sys.stderr)
    return 0


def run_list(args: argparse.Namespace) -> int:
    with directory(args) as d:
        rows = asyncio.run(d.list_tokens(user_id=args.user, tenant=args.tenant))
    if args.json:
        emit_json([token_view(t) for t in rows])
        return 0
    table(
        ["id", "user", "tenant", "name", "scopes", "created", "expires", "last used", "revoked"],
        [
            (
                t.id,
                t.user_id,
                t.tenant or "(operator)",
                t.name,
                ",".join(t.scopes) if t.scopes is not None else "all",
                when(t.created_at),
                when(t.expires_at) if t.expires_at else "",
                when(t.last_used_at) if t.last_used_at else "",
                when(t.revoked_at) if t.revoked_at else "",
            )
            for t in rows
        ],
    )
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    with directory(args) as d:
        row = asyncio.run(d.revoke_token(args.token_id))
    if args.json:
        emit_json(token_view(row))
    else:
        print(f"revoked {row.id} at {when(row.revoked_at)}")
    return 0
