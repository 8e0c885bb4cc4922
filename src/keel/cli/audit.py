"""`keel audit verify|export|list`: the hash-chained audit log in the configured store.

`verify` exits 1 naming the first entry that does not hold (edited, deleted, reordered); `export` writes
JSONL with each entry's chain fields, so an auditor can re-check a slice without Keel.
"""

from __future__ import annotations

import argparse
import sys

from keel.cli.context import store
from keel.cli.output import Failure, emit_json, table, when


def register(p: argparse.ArgumentParser) -> None:
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    verify = verbs.add_parser("verify", help="check the whole chain; name the first bad entry")
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(run=run_verify)
    export = verbs.add_parser("export", help="entries as JSONL with their chain (prev_hash, hash)")
    _window(export)
    export.add_argument("--out", "-o", help="write to this file instead of stdout")
    export.set_defaults(run=run_export)
    ls = verbs.add_parser("list", help="recent entries")
    _window(ls)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(run=run_list)


def _window(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", help="unix seconds, ISO 8601 or a duration back from now (24h)")
    p.add_argument("--until", help="the same forms; exclusive")
    p.add_argument("--tenant")


def _bounds(args: argparse.Namespace) -> tuple[float | None, float | None]:
    from keel.audit.log import parse_instant

    try:
        since = None if args.since is None else parse_instant(args.since, "--since")
        until = None if args.until is None else parse_instant(args.until, "--until")
    except ValueError as exc:
        raise Failure(str(exc)) from None
    return since, until


def run_verify(args: argparse.Namespace) -> int:
    from keel.audit.log import AuditLog

    with store(args) as s:
        verdict = AuditLog(s).verify()
    if args.json:
        emit_json(verdict.json())
    elif verdict.ok:
        print(f"ok: {verdict.checked} entries, chain intact")
    else:
        print(f"BAD: {verdict.reason} ({verdict.checked} entries before it hold)")
    return 0 if verdict.ok else 1


def run_export(args: argparse.Namespace) -> int:
    from keel.audit.log import AuditLog

    since, until = _bounds(args)
    with store(args) as s:
        lines = AuditLog(s).export(since=since, until=until, tenant=args.tenant)
        if args.out:
            with open(args.out, "wb") as f:
                f.writelines(lines)
        else:
            sys.stdout.buffer.writelines(lines)
            sys.stdout.flush()
    return 0


def run_list(args: argparse.Namespace) -> int:
    from keel.audit.log import AuditLog, entry_json

    since, until = _bounds(args)
    with store(args) as s:
        entries = list(AuditLog(s).entries(since=since, until=until, tenant=args.tenant))[-200:]
    if args.json:
        emit_json([entry_json(e) for e in entries])
        return 0
    rows = [(e.seq, when(e.at), e.tenant or "", e.actor, e.action, e.target or "", e.hash[:12]) for e in entries]
    table(("seq", "at", "tenant", "actor", "action", "target", "hash"), rows)
    return 0
