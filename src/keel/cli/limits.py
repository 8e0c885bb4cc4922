"""`keel limits set|list|clear|usage`: per-tenant and per-key overrides of keel.yaml's default limits.

`set`, `list` and `clear` write the store directly; every gateway process picks changes up within
seconds. `usage` asks the running gateway, since the counters live in its process or in Redis.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from keel.cli.audited import record
from keel.cli.context import store
from keel.cli.output import Failure, emit_json, table, when
from keel.cli.remote import add_url, admin_get
from keel.limits.book import KINDS

_UNIT = {"request": "requests", "tokens": "tokens", "usd": "USD"}
_WINDOW = {
    "minute": "per sliding minute",
    "day": "per UTC day",
    "month": "per UTC month",
    "total": "in total",
    "concurrent": "in flight",
}


def register(p: argparse.ArgumentParser) -> None:
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    put = verbs.add_parser("set", help="replace a tenant's or key's limits (kinds not given fall back to keel.yaml)")
    _subject(put)
    for kind, (window, unit) in KINDS.items():
        number, metavar = (float, "USD") if unit == "usd" else (int, "N")
        flag, what = f"--{kind.replace('_', '-')}", f"{_UNIT[unit]} {_WINDOW[window]}"
        put.add_argument(flag, dest=kind, type=number, metavar=metavar, help=what)
    put.add_argument(
        "--on-store-error", choices=("open", "closed"), help="tenants only: serve or refuse when Redis is unreachable"
    )
    put.add_argument("--json", action="store_true")
    put.set_defaults(run=run_set)
    ls = verbs.add_parser("list", help="list every override")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(run=run_list)
    clear = verbs.add_parser("clear", help="remove a tenant's or key's overrides (keel.yaml's defaults apply again)")
    _subject(clear)
    clear.set_defaults(run=run_clear)
    usage = verbs.add_parser("usage", help="usage now against every applicable limit (asks the running gateway)")
    usage.add_argument("--tenant", required=True)
    usage.add_argument("--key", help="a key id")
    usage.add_argument("--user")
    usage.add_argument("--feature")
    usage.add_argument("--alias", help="a model alias")
    add_url(usage)
    usage.add_argument("--json", action="store_true")
    usage.set_defaults(run=run_usage)


def _subject(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--tenant", help="a tenant name")
    which.add_argument("--key", help="a key id (see `keel keys list`)")


def _scope(args: argparse.Namespace) -> tuple[str, str]:
    return ("tenant", args.tenant) if args.tenant is not None else ("key", args.key)


def _amount(kind: str, value: float, group: str = ",") -> str:
    """1,000,000 tokens; $12.5 (to 1/100 of a cent). `group=""` for no thousands separator."""
    if not kind.startswith("usd"):
        return f"{value:{group}.0f}"
    return "$" + f"{value:{group}.4f}".rstrip("0").rstrip(".")


def _shown(limits: dict[str, float], sep: str = ",") -> str:
    return sep.join(f"{kind}={_amount(kind, value, '')}" for kind, value in limits.items()) or "-"


def run_set(args: argparse.Namespace) -> int:
    scope, subject = _scope(args)
    limits = {kind: getattr(args, kind) for kind in KINDS if getattr(args, kind) is not None}
    with store(args) as s:
        row = s.set_limits(scope, subject, limits, args.on_store_error)
        after = {"limits": row.limits, "on_store_error": row.on_store_error}
        record(s, "limits.set", f"{scope}:{subject}", tenant=subject if scope == "tenant" else None, after=after)
    if args.json:
        emit_json(asdict(row))
    else:
        fail = f"; fail-{row.on_store_error} when Redis is unreachable" if row.on_store_error else ""
        print(f"limits for {scope} {subject}: {_shown(row.limits, ', ')}{fail}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    with store(args) as s:
        rows = s.list_limits()
    if args.json:
        emit_json([asdict(r) for r in rows])
        return 0
    table(
        ["scope", "subject", "limits", "on_store_error", "updated"],
        [(r.scope, r.subject, _shown(r.limits), r.on_store_error, when(r.updated_at)) for r in rows],
    )
    return 0


def run_clear(args: argparse.Namespace) -> int:
    scope, subject = _scope(args)
    with store(args) as s:
        cleared = s.clear_limits(scope, subject)
        if cleared:
            record(s, "limits.clear", f"{scope}:{subject}", tenant=subject if scope == "tenant" else None)
    if not cleared:
        raise Failure(f"no limits are set for {scope} '{subject}'; see `keel limits list`")
    print(f"cleared the limits of {scope} {subject}; keel.yaml's defaults apply")
    return 0


def run_usage(args: argparse.Namespace) -> int:
    params = {name: getattr(args, name) for name in ("tenant", "key", "user", "feature", "alias")}
    rows: list[dict[str, Any]] = admin_get(args, "/api/limits/usage", params)["data"]
    if args.json:
        emit_json(rows)
        return 0
    if not rows:
        print(f"no limit applies to tenant {args.tenant} (with the scopes given)")
        return 0
    table(
        ["counter", "kind", "limit", "used", "share"],
        [
            (
                r["counter"],
                r["kind"],
                _amount(r["kind"], r["limit"]),
                _amount(r["kind"], r["used"]),
                "-" if r["share"] is None else f"{r['share']:.0%}",
            )
            for r in rows
        ],
    )
    return 0
