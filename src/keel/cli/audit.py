"""`keel audit verify|export|list`: the hash-chained audit log in the configured store.

`verify` exits 1 naming the first entry that does not hold (edited, deleted, reordered); with `--file` it
checks an exported range alone, without the database. `export` writes a range as JSONL (self-verifying:
each entry's chain fields and a trailer) or CSV.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from keel.cli.context import store
from keel.cli.output import Failure, emit_json, table, when

if TYPE_CHECKING:
    from keel.audit.export import AuditQuery
    from keel.store.protocols import AuditEntry


def register(p: argparse.ArgumentParser) -> None:
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    verify = verbs.add_parser("verify", help="check the whole chain (or an exported file); name the first bad entry")
    verify.add_argument("--file", "-f", help="an export (.jsonl, or .csv) to check on its own, offline")
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(run=run_verify)
    export = verbs.add_parser("export", help="a range as JSONL (with its chain, verifiable alone) or CSV")
    _window(export)
    export.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
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
    p.add_argument("--actor", help="e.g. admin, key:<id>, user:<id>")
    p.add_argument("--action", help="a prefix: 'prompt.' matches every prompt action")
    p.add_argument("--target")


def _query(args: argparse.Namespace) -> AuditQuery:
    from keel.audit.export import AuditQuery, QueryError

    names = ("since", "until", "tenant", "actor", "action", "target")
    try:
        return AuditQuery.parse({n: getattr(args, n) for n in names})
    except QueryError as exc:
        raise Failure(f"--{exc.param}: {exc}") from None


def run_verify(args: argparse.Namespace) -> int:
    if args.file:
        return _verify_file(args)
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


def _verify_file(args: argparse.Namespace) -> int:
    from keel.audit.export import read_csv, read_jsonl, verify_file

    as_csv = args.file.endswith(".csv")
    try:
        if as_csv:
            with open(args.file, newline="", encoding="utf-8") as text:
                verdict = verify_file(read_csv(text), csv_form=True)
        else:
            with open(args.file, "rb") as raw:
                verdict = verify_file(read_jsonl(raw))
    except OSError as exc:
        raise Failure(f"cannot read {args.file}: {exc.strerror}") from None
    except ValueError as exc:
        raise Failure(f"{args.file}: {exc}") from None
    if args.json:
        emit_json(verdict.json())
    elif verdict.ok:
        span = f"seq {verdict.first_seq} to {verdict.last_seq}" if verdict.entries else "no entries"
        extent = {True: "complete range", False: "filtered: links checked between consecutive entries only"}
        scope = "CSV: completeness not checkable" if verdict.complete is None else extent[verdict.complete]
        print(f"ok: {verdict.entries} entries ({span}), {verdict.links} links, {scope}")
        print(f"anchor: the entry before it has hash {verdict.anchor}")
    else:
        for problem in verdict.problems[:20]:
            print(f"BAD: {problem}")
    return 0 if verdict.ok else 1


def run_export(args: argparse.Namespace) -> int:
    from keel.audit.export import export

    query = _query(args)
    with store(args) as s:
        chunks = export(s, query, args.format)
        if args.out:
            with open(args.out, "wb") as f:
                f.writelines(chunks)
        else:
            sys.stdout.buffer.writelines(chunks)
            sys.stdout.flush()
    return 0


def run_list(args: argparse.Namespace) -> int:
    from collections import deque

    from keel.audit.export import Snapshot
    from keel.audit.log import entry_json

    query = _query(args)
    with store(args) as s:
        snap = Snapshot.begin(s, query)
        entries: deque[AuditEntry] = deque(maxlen=200)
        while page := snap.next_page(s):
            entries.extend(page)
    if args.json:
        emit_json([entry_json(e) for e in entries])
        return 0
    rows = [(e.seq, when(e.at), e.tenant or "", e.actor, e.action, e.target or "", e.hash[:12]) for e in entries]
    table(("seq", "at", "tenant", "actor", "action", "target", "hash"), rows)
    return 0
