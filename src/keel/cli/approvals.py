"""`keel approvals list|approve|deny`: pending tool calls in the configured store. A decision is one
conditional move: a second one (here or through the API) changes nothing and says so. The run goes on from
a gateway's runs worker (within 0.5 s of the decision)."""

from __future__ import annotations

import argparse

from keel.cli.context import store
from keel.cli.output import Failure, emit_json, table, when


def register(p: argparse.ArgumentParser) -> None:
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    ls = verbs.add_parser("list", help="tool calls waiting for a person (or --state)")
    ls.add_argument("--tenant")
    ls.add_argument("--state", default="pending")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(run=run_list)
    for verb, helptext in (("approve", "let a pending call run (once)"), ("deny", "refuse it: the model hears why")):
        v = verbs.add_parser(verb, help=helptext)
        v.add_argument("call_id")
        v.add_argument("--by", default="cli", help="who decides (recorded in the audit log)")
        v.add_argument("--json", action="store_true")
        v.set_defaults(run=run_decide, approve=verb == "approve")


def run_list(args: argparse.Namespace) -> int:
    from keel.agents.views import call_view

    with store(args) as s:
        rows = s.list_calls(tenant=args.tenant, state=args.state)
    if args.json:
        emit_json([call_view(r) for r in rows])
        return 0
    table(("call", "tenant", "tool", "arguments", "state", "asked", "expires"),
          [(r.id, r.tenant, r.tool, str(r.arguments)[:60], r.state, when(r.created_at), when(r.expires_at)) for r in rows])  # fmt: skip
    return 0


def run_decide(args: argparse.Namespace) -> int:
    from keel.agents.approvals import decide
    from keel.agents.views import call_view
    from keel.audit.log import AuditLog

    with store(args) as s:
        row, moved = decide(s, AuditLog(s), args.call_id, args.approve, by=f"cli:{args.by}")
    if row is None:
        raise Failure(f"no tool call '{args.call_id}'")
    if args.json:
        emit_json({**call_view(row), "changed": moved})
    elif moved:
        print(f"{row.state} {row.id} ({row.tool})")
    else:
        print(f"unchanged: {row.id} is already {row.state} (by {row.decided_by})")
    return 0
