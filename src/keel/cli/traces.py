"""`keel traces list|show|replay|deadletter`: a bounded time window plus filters, newest first; replay via
the gateway; the records no store would take, from the dead-letter file beside the spills.

Replay always goes through the running gateway's admin API (never an in-process runtime): the
replayed call must be traced by the gateway's writer, counted against the tenant's shared limits
and routed with its live breakers, exactly like any other call.
"""

from __future__ import annotations

import argparse
import shutil
import textwrap
import time
from typing import Any

from keel.cli.context import load_config, store
from keel.cli.output import Failure, emit_json, table, when
from keel.cli.remote import add_url, admin_post
from keel.errors import InvalidRequest
from keel.traces.spans import tree_lines
from keel.traces.spill import SpillDir
from keel.traces.writer import FILTERS, read_spans, read_trace, trace_query, trace_view


def register(p: argparse.ArgumentParser) -> None:
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
    rp = verbs.add_parser(
        "replay", help="re-send a recorded call through the running gateway; both answers side by side"
    )
    rp.add_argument("trace_id")
    rp.add_argument("--alias", help="route the replay through this alias instead of the original one")
    rp.add_argument("--model", help="send it to one provider model, bypassing alias routing: PROVIDER/MODEL")
    rp.add_argument("--prompt-version", type=int, help="a call by prompt: render this version of it instead")
    rp.add_argument("--json", action="store_true")
    add_url(rp)
    rp.set_defaults(run=run_replay)
    dl = verbs.add_parser("deadletter", help="list trace records no store would take (in traces.spill_dir)")
    dl.add_argument("--requeue", action="store_true", help="hand them back to the writer to load again (after a fix)")
    dl.add_argument("--json", action="store_true")
    dl.set_defaults(run=run_deadletter)


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
    from keel.traces.builder import blobs_from  # the traces capability's imports only for this verb

    blobs = blobs_from(load_config(args))
    try:
        with store(args) as s:
            row = read_trace(s, blobs, args.trace_id)  # a payload kept in the blob store is fetched back
            spans = read_spans(s, args.trace_id) if row is not None else []
    finally:
        blobs.close()
    if row is None:
        raise Failure(f"no trace '{args.trace_id}'; see `keel traces list`")
    if args.json:
        emit_json(trace_view(row, full=True, spans=spans))
        return 0
    for k, v in trace_view(row, full=True).items():
        print(f"{k:>20}: {v}")
    print("\nspans:")  # the call, then its child spans as a tree
    for line in tree_lines(row, spans):
        print(f"  {line}")
    return 0


def run_replay(args: argparse.Namespace) -> int:
    if args.alias and args.model:
        raise Failure("give --alias or --model, not both")
    body = {"alias": args.alias, "model": args.model, "prompt_version": args.prompt_version}
    result: dict[str, Any] = admin_post(args, f"/api/traces/{args.trace_id}/replay", body)
    if args.json:
        emit_json(result)
        return 0
    width = shutil.get_terminal_size((100, 24)).columns
    print(side_by_side(result["original"], result["replay"], width))
    if result["redacted"]:
        kinds = ", ".join(result["redacted"])
        print(f"\nnote: the recorded request was redacted ({kinds}); the replay sent the placeholders as they are")
    if result["error"]:
        print(f"\nreplay failed: {result['error']}")
    return 0


def run_deadletter(args: argparse.Namespace) -> int:
    files = SpillDir(load_config(args).traces.spill_dir)
    if args.requeue:
        queued, kept = files.requeue()
        if args.json:
            emit_json({"requeued": queued, "kept": kept})
            return 0
        print(f"requeued {queued} records as a spill in {files.path}: a running gateway loads them within seconds")
        if kept:
            print(f"{kept} entries stay in the dead letter (no record to requeue, or not writable as JSON)")
        return 0
    entries = files.deadletters()
    if args.json:
        emit_json(entries)
        return 0
    rows = []
    for e in entries:
        r = e.get("record") or {}
        span = e.get("span")
        if isinstance(span, dict):  # a child span: its trace id and span id
            r = {"id": f"{span.get('trace_id')} span {span.get('span_id')}", "tenant": span.get("tenant")}
        rows.append((when(e.get("at")), r.get("id", e.get("id")), r.get("tenant"), str(e.get("reason"))[:120]))
    table(["at", "id", "tenant", "reason"], rows)
    return 0


_LABEL = 14


def side_by_side(original: dict[str, Any], replay: dict[str, Any], width: int) -> str:
    """Two columns, one per call: what each answered, and its tokens, cost and latency."""
    col = max(24, (width - _LABEL - 4) // 2)
    rows = [("", "ORIGINAL", "REPLAY")] + [(label, f(original), f(replay)) for label, f in _FIELDS]
    lines = []
    for label, left, right in rows:
        lines.append(_pair(label, _wrap(left, col), _wrap(right, col), col))
    lines.append(_pair("answer", _wrap(_answer(original), col), _wrap(_answer(replay), col), col))
    return "\n".join(lines)


def _pair(label: str, left: list[str], right: list[str], col: int) -> str:
    out = []
    for i in range(max(len(left), len(right), 1)):
        a = left[i] if i < len(left) else ""
        b = right[i] if i < len(right) else ""
        out.append(f"{label if i == 0 else '':<{_LABEL}}  {a:<{col}}  {b}".rstrip())
    return "\n".join(out)


def _money(v: Any) -> str:
    return "-" if v is None else f"${v:.6f}"


def _ms(side: dict[str, Any]) -> str:
    if side["latency_ms"] is None:
        return "-"
    ttft = f" (first token {side['ttft_ms']:.1f} ms)" if side["stream"] and side["ttft_ms"] is not None else ""
    return f"{side['latency_ms']:.1f} ms{ttft}"


_FIELDS = (
    ("trace", lambda s: s["trace_id"]),
    ("alias", lambda s: s["alias"] or "-"),
    ("target", lambda s: f"{s['provider'] or '-'}/{s['model'] or '-'}"),
    ("status", lambda s: s["status"] + (f" ({s['finish_reason']})" if s["finish_reason"] else "")),
    ("tokens in/out", lambda s: f"{_n(s['input_tokens'])} / {_n(s['output_tokens'])}"),
    ("cost", lambda s: _money(s["cost_usd"])),
    ("latency", _ms),
)


def _n(v: Any) -> str:
    return "-" if v is None else str(v)


def _answer(side: dict[str, Any]) -> str:
    parts = [side["content"]] if side["content"] else []
    parts += [f"→ {c['name']}({c['arguments']})" for c in side["tool_calls"]]
    if side["error"]:
        parts.append(f"error: {side['error']}")
    return "\n".join(parts) or "-"


def _wrap(text: str, col: int) -> list[str]:
    return [line for para in text.splitlines() for line in (textwrap.wrap(para, col) or [""])]
