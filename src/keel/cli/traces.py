"""`keel traces list|show`: a bounded time window plus filters, newest first."""

from __future__ import annotations

import argparse
import time

from keel.cli.context import load_config, store
from keel.cli.output import Failure, emit_json, table, when
from keel.errors import InvalidRequest
from keel.runtime import blobs_from
from keel.traces import FILTERS, read_trace, trace_query, trace_view


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("traces", help="inspect call traces")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    ls = verbs.add_parser("list", help="list traces in a time window")
    ls.add_argument("--since", default="24h", help="unix seconds or a duration back from now (15m, 24h, 7d)")
    ls.add_argument("--until", help="unix seconds or a duration back from now (default: now)")
    ls.add_argument("--limit", default="50")
    for f in FILTERS:
        ls.add_argument(f"--{f.replace('_', '-')}", dest=f)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(run=run_list)
    show = verbs.add_parser("show", help="show one trace in full")
    show.add_argument("trace_id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(run=run_show)


def run_list(args: argparse.Namespace) -> int:

    params = {k: v for k in (*FILTERS, "since", "until", "limit") if (v := getattr(args, k)) is not None}
    try:
        query = trace_query(params, time.time())
    except InvalidRequest as err:
        raise Failure(err.message) from None
    with store(args) as s:
        rows = s.list_traces(query)
    if args.json:
        emit_json([trace_view(r, full=False) for r in rows])
        return 0
    table(
        ["id", "time", "tenant", "alias", "model", "status", "in", "out", "cost", "ms"],
        [
            (r.id, when(r.started_at), r.tenant, r.alias, r.model, r.status, r.input_tokens, r.output_tokens,
             "-" if r.cost_usd is None else f"{r.cost_usd:.6f}", "-" if r.latency_ms is None else f"{r.latency_ms:.1f}")
            for r in rows
        ],
    )  # fmt: skip
    return 0


def run_show(args: argparse.Namespace) -> int:

    blobs = blobs_from(load_config(args))
    try:
        with store(args) as s:
            row = read_trace(s, blobs, args.trace_id)  # a payload kept in the blob store is fetched back
    finally:
        blobs.close()
    if row is None:
        raise Failure(f"no trace '{args.trace_id}'; see `keel traces list`")
    data = trace_view(row, full=True)
    if args.json:
        emit_json(data)
    else:
        for k, v in data.items():
            print(f"{k:>20}: {v}")
    return 0
