"""`keel runs list|show|replay [--live]`: agent runs in the configured store; `show` prints the step tree (model steps
with their tokens and cost, tool calls with arguments, approvals and results, the answer)."""

from __future__ import annotations

import argparse
from typing import Any

from keel.cli.context import store
from keel.cli.output import Failure, emit_json, table, when


def register(p: argparse.ArgumentParser) -> None:
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    ls = verbs.add_parser("list", help="recent runs")
    ls.add_argument("--tenant")
    ls.add_argument("--state")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(run=run_list)
    show = verbs.add_parser("show", help="a run's step tree")
    show.add_argument("run_id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(run=run_show)
    rp = verbs.add_parser("replay", help="send the model steps again with the recorded tool results; show divergence")
    rp.add_argument("run_id")
    rp.add_argument("--live", action="store_true", help="run it again for real under today's tools and policy")
    rp.set_defaults(run=run_replay)


def run_list(args: argparse.Namespace) -> int:
    from keel.agents.views import run_view

    with store(args) as s:
        rows = s.list_runs(args.tenant, args.state, 100)
    if args.json:
        emit_json([run_view(r, full=False) for r in rows])
        return 0
    table(("run", "tenant", "state", "model", "steps", "cost", "started"),
          [(r.id, r.tenant, r.state, r.data["model"], len(r.data["steps"]), f"{r.data.get('cost_usd') or 0:.6f}",
            when(r.created_at)) for r in rows])  # fmt: skip
    return 0


def run_show(args: argparse.Namespace) -> int:
    from keel.agents.views import call_view, run_view, step_tree

    with store(args) as s:
        row = s.get_run(args.run_id)
        calls = s.list_calls(run_id=args.run_id)
    if row is None:
        raise Failure(f"no run '{args.run_id}'")
    if args.json:
        emit_json({**run_view(row), "calls": [call_view(c) for c in calls]})
        return 0
    print("\n".join(step_tree(row, calls)))
    return 0


def run_replay(args: argparse.Namespace) -> int:
    """Build the runtime from the config (no HTTP listener), replay, print each step; exit 1 on divergence."""
    import asyncio

    from keel.agents.replay import replay
    from keel.cli.context import load_config
    from keel.runtime.components import Runtime

    async def go() -> int:
        runtime = Runtime.build(load_config(args))
        try:
            row = runtime.store.get_run(args.run_id)
            if row is None:
                raise Failure(f"no run '{args.run_id}'")
            if args.live:
                return await live(runtime, row)
            tools = [{"type": "function", "function": {"name": r.name, "description": r.spec.get("description", ""),
                      "parameters": r.spec["parameters"]}} for r in runtime.store.list_tools(row.tenant)
                     if r.name in row.data["tools"]]  # fmt: skip
            steps = await replay(runtime.pipeline, row, tools)
        finally:
            await runtime.aclose()
        diverged = next((s for s in steps if not s.same), None)
        for s in steps:
            print(
                f"step {s.n}: {'same' if s.same else 'DIVERGES'}\n  recorded: {s.recorded[:300]}\n  replayed: {s.replayed[:300]}"
            )
        print(f"diverges at step {diverged.n}" if diverged else f"no divergence in {len(steps)} steps")
        return 1 if diverged else 0

    return asyncio.run(go())


async def live(runtime: Any, row: Any) -> int:
    """`replay --live`: a new run, tools and all; its steps beside the recorded ones. Exit 1 on divergence."""
    from keel.agents.loop import Runs
    from keel.agents.replay import replay_live
    from keel.errors import KeelError

    try:
        new, steps = await replay_live(runtime.get(Runs), row)
    except KeelError as err:
        raise Failure(f"the live replay could not start: {err.message}") from None
    print(f"live run {new.id} ({new.state}) against {row.id}")
    for s in steps:
        print(
            f"step {s.n}: {'same' if s.same else 'DIVERGES'}\n  recorded: {s.recorded[:300]}\n  live:     {s.replayed[:300]}"
        )
    diverged = next((s for s in steps if not s.same), None)
    if new.state == "waiting":
        print(f"the live run waits for approval of {', '.join(p['call_id'] for p in new.data['pending'])}")
    print(f"diverges at step {diverged.n}" if diverged else f"no divergence in {len(steps)} steps")
    return 1 if diverged else 0
