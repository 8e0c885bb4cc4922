"""`keel users add|list|show|set-role|disable|remove`: the tenancy directory's people, on the configured
store (as an operator: this command has the database). `keel users add --operator ID` bootstraps the
first operator; give them a token with `keel tokens create --user ID`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

from keel.cli import users_purge
from keel.cli.context import store
from keel.cli.output import Failure, emit_json, table, when
from keel.errors import KeelError
from keel.tenancy.actor import OPERATOR, ROLES
from keel.tenancy.directory import Directory, token_view, user_view


@contextlib.contextmanager
def directory(args: argparse.Namespace) -> Iterator[Directory]:
    """The directory over the configured store; its refusals are the command's failure (exit 1)."""
    with store(args) as s:
        try:
            yield Directory(s)
        except KeelError as err:
            raise Failure(err.message) from None


def roles_of(text: str) -> tuple[str, ...]:
    return tuple(r.strip() for r in text.split(",") if r.strip())


def register(p: argparse.ArgumentParser) -> None:
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    users_purge.register(verbs)  # `keel users purge TENANT USER`: the user's data, with a receipt
    add = verbs.add_parser("add", help="add a user to a tenant with roles (or an operator)")
    add.add_argument("id", nargs="?", help="the user's id (default: generated)")
    add.add_argument("--tenant", help="their tenant (not with --operator)")
    add.add_argument("--roles", help=f"comma-separated: {', '.join(ROLES)}")
    add.add_argument("--operator", action="store_true", help="a platform operator: every tenant, every permission")
    add.add_argument("--email")
    add.add_argument("--name")
    add.add_argument("--team")
    add.add_argument("--issuer", help="with --subject: their SSO identity, for a provider without jit")
    add.add_argument("--subject", help="the identity provider's subject (`sub` claim) for them")
    add.add_argument("--json", action="store_true")
    add.set_defaults(run=run_add)
    ls = verbs.add_parser("list", help="list users")
    ls.add_argument("--tenant")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(run=run_list)
    show = verbs.add_parser("show", help="one user, with their tokens (never the secrets)")
    show.add_argument("id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(run=run_show)
    role = verbs.add_parser("set-role", help="replace a user's roles (and team)")
    role.add_argument("id")
    role.add_argument("roles", help=f"comma-separated: {', '.join(ROLES)}")
    role.add_argument("--team", help="their team ('' for none)")
    role.add_argument("--json", action="store_true")
    role.set_defaults(run=run_set_role)
    disable = verbs.add_parser("disable", help="refuse the user's tokens and logins (--enable: undo)")
    disable.add_argument("id")
    disable.add_argument("--enable", action="store_true")
    disable.add_argument("--json", action="store_true")
    disable.set_defaults(run=run_disable)
    remove = verbs.add_parser("remove", help="remove a user and their tokens")
    remove.add_argument("id")
    remove.add_argument("--json", action="store_true")
    remove.set_defaults(run=run_remove)


def _view(row: Any) -> dict[str, Any]:
    return user_view(row)


def _print(row: Any, args: argparse.Namespace, verb: str) -> int:
    if args.json:
        emit_json(_view(row))
    else:
        state = " (disabled)" if row.disabled_at else ""
        print(f"{verb} {row.id}: tenant {row.tenant or '(operator)'}, roles {','.join(row.roles)}{state}")
    return 0


def run_add(args: argparse.Namespace) -> int:
    if args.operator == bool(args.tenant) or (not args.operator and not args.roles):
        raise Failure("name --tenant and --roles, or --operator (no tenant)")
    roles = (OPERATOR,) if args.operator else roles_of(args.roles)
    with directory(args) as d:
        row = asyncio.run(
            d.add_user(
                None if args.operator else args.tenant,
                roles,
                user_id=args.id,
                email=args.email,
                name=args.name,
                team=args.team,
                issuer=args.issuer,
                subject=args.subject,
            )
        )
    return _print(row, args, "added")


def run_list(args: argparse.Namespace) -> int:
    with directory(args) as d:
        rows = asyncio.run(d.list_users(args.tenant))
    if args.json:
        emit_json([_view(u) for u in rows])
        return 0
    table(
        ["id", "tenant", "roles", "team", "email", "sso", "created", "disabled"],
        [
            (
                u.id,
                u.tenant or "(operator)",
                ",".join(u.roles),
                u.team,
                u.email,
                u.issuer or "",
                when(u.created_at),
                when(u.disabled_at) if u.disabled_at else "",
            )
            for u in rows
        ],
    )
    return 0


def run_show(args: argparse.Namespace) -> int:
    with directory(args) as d:
        row = asyncio.run(d.user(args.id))
        tokens = asyncio.run(d.list_tokens(user_id=row.id))
    if args.json:
        emit_json({**_view(row), "tokens": [token_view(t) for t in tokens]})
        return 0
    for name, value in _view(row).items():
        print(f"{name:12} {value}")
    for t in tokens:
        print(f"token        {t.id} {t.name or ''} {'revoked' if t.revoked_at else 'active'}")
    return 0


def run_set_role(args: argparse.Namespace) -> int:
    with directory(args) as d:
        row = asyncio.run(
            d.update_user(args.id, roles=roles_of(args.roles), team=args.team or None, clear_team=args.team == "")
        )
    return _print(row, args, "changed")


def run_disable(args: argparse.Namespace) -> int:
    with directory(args) as d:
        row = asyncio.run(d.update_user(args.id, disabled=not args.enable))
    return _print(row, args, "enabled" if args.enable else "disabled")


def run_remove(args: argparse.Namespace) -> int:
    with directory(args) as d:
        row = asyncio.run(d.remove_user(args.id))
    return _print(row, args, "removed")
