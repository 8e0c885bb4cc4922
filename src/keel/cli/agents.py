"""`keel agents add|list|show|remove`: a tenant's named agents (keel.agents.definitions), which runs start
by name (`POST /api/agents/runs {agent: NAME, input}`). Each change is an audit entry."""

from __future__ import annotations

import argparse
import time

from keel.cli import audited
from keel.cli.context import store
from keel.cli.output import Failure, emit_json, table, when


def _names(text: str | None) -> list[str]:
    return [x.strip() for x in (text or "").split(",") if x.strip()]


def register(p: argparse.ArgumentParser) -> None:
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    add = verbs.add_parser("add", help="add (or replace) a named agent")
    add.add_argument("name")
    add.add_argument("--tenant", required=True)
    add.add_argument("--model", required=True, help="the alias its model steps call")
    add.add_argument("--tools", help="registered tool names, comma-separated")
    add.add_argument("--max-steps", type=int, default=8)
    add.add_argument("--system", help="its system prompt")
    add.add_argument("--roles", help="roles it acts as, comma-separated (tool policies' rules can name them)")
    add.add_argument("--description", default="")
    add.add_argument("--json", action="store_true")
    add.set_defaults(run=run_add)
    ls = verbs.add_parser("list", help="list a tenant's agents")
    ls.add_argument("--tenant")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(run=run_list)
    show = verbs.add_parser("show", help="show an agent")
    show.add_argument("name")
    show.add_argument("--tenant", required=True)
    show.set_defaults(run=run_show)
    rm = verbs.add_parser("remove", help="remove an agent")
    rm.add_argument("name")
    rm.add_argument("--tenant", required=True)
    rm.set_defaults(run=run_remove)


def run_add(args: argparse.Namespace) -> int:
    from keel.agents.definitions import parse_agent
    from keel.agents.tools import SpecError
    from keel.store.protocols.agents import ToolRow

    data = {"name": args.name, "model": args.model, "tools": _names(args.tools), "max_steps": args.max_steps,
            "system": args.system, "roles": _names(args.roles), "description": args.description}  # fmt: skip
    try:
        agent = parse_agent(data)
    except SpecError as err:
        raise Failure(err.message) from None
    stored = agent.model_dump(mode="json", exclude={"name"})
    with store(args) as s:
        missing = [t for t in agent.tools if s.get_tool(args.tenant, t) is None]
        if missing:
            raise Failure(f"no tool {', '.join(missing)} for tenant '{args.tenant}' (keel tools add)")
        before = s.get_agent(args.tenant, agent.name)
        s.put_agent(ToolRow(args.tenant, agent.name, stored, time.time()))
        audited.record(s, "agent.register", agent.name, tenant=args.tenant,
                       before=before.spec if before else None, after=stored)  # fmt: skip
    if args.json:
        emit_json({"tenant": args.tenant, "name": agent.name, **stored})
    else:
        print(f"{'replaced' if before else 'added'} agent {agent.name} ({agent.model}, {len(agent.tools)} tools)")
    return 0


def run_list(args: argparse.Namespace) -> int:
    with store(args) as s:
        rows = s.list_agents(args.tenant)
    if args.json:
        emit_json([{"tenant": r.tenant, "name": r.name, **r.spec, "updated_at": r.updated_at} for r in rows])
        return 0
    out = [(r.tenant, r.name, r.spec.get("model"), ",".join(r.spec.get("tools") or []),
            ",".join(r.spec.get("roles") or []), when(r.updated_at)) for r in rows]  # fmt: skip
    table(("tenant", "name", "model", "tools", "roles", "updated"), out)
    return 0


def run_show(args: argparse.Namespace) -> int:
    with store(args) as s:
        row = s.get_agent(args.tenant, args.name)
    if row is None:
        raise Failure(f"no agent '{args.name}' for tenant '{args.tenant}'")
    emit_json({"tenant": row.tenant, "name": row.name, **row.spec, "updated_at": row.updated_at})
    return 0


def run_remove(args: argparse.Namespace) -> int:
    with store(args) as s:
        before = s.get_agent(args.tenant, args.name)
        if before is None or not s.delete_agent(args.tenant, args.name):
            raise Failure(f"no agent '{args.name}' for tenant '{args.tenant}'")
        audited.record(s, "agent.remove", args.name, tenant=args.tenant, before=before.spec)
    print(f"removed agent {args.name}")
    return 0
