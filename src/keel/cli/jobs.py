"""`keel jobs list|show|cancel|retry`: the job queue in the configured store, as operators see it
(a job whose lease expired repeatedly with no progress shows as `stuck`)."""

from __future__ import annotations

import argparse
import time

from keel.cli.context import load_config, store
from keel.cli.output import Failure, emit_json, table, when
from keel.jobs.views import FILTERS, STATES, job_query, job_view


def register(p: argparse.ArgumentParser) -> None:
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    ls = verbs.add_parser("list", help="list jobs, newest first")
    ls.add_argument("--state", choices=STATES)
    for f in FILTERS[1:]:
        ls.add_argument(f"--{f}")
    ls.add_argument("--limit", default="50")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(run=run_list)
    for verb, help_, run in (
        ("show", "show one job in full", run_show),
        ("cancel", "cancel a queued job, or ask a running one to stop", run_cancel),
        ("retry", "queue a dead or cancelled job again, its attempts reset", run_retry),
    ):
        v = verbs.add_parser(verb, help=help_)
        v.add_argument("job_id")
        v.add_argument("--json", action="store_true")
        v.set_defaults(run=run)


def run_list(args: argparse.Namespace) -> int:
    stuck_after = load_config(args).jobs.stuck_after
    params = {k: v for k in (*FILTERS, "limit") if (v := getattr(args, k)) is not None}
    try:
        query = job_query(params, stuck_after)
    except ValueError as exc:
        raise Failure(str(exc)) from None
    with store(args) as s:
        views = [job_view(j, stuck_after) for j in s.list_jobs(query)]
    if args.json:
        emit_json(views)
        return 0
    table(
        ["id", "kind", "queue", "tenant", "state", "attempts", "progress", "created", "error"],
        [
            (v["id"], v["kind"], v["queue"], v["tenant"] or "-", v["state"], f"{v['attempts']}/{v['max_attempts']}",
             _progress(v["progress"]), when(v["created_at"]), (v["error"] or "")[:60])
            for v in views
        ],
    )  # fmt: skip
    return 0


def _progress(p: dict[str, object]) -> str:
    if p["done"] is None and p["total"] is None:
        return "-"
    return f"{p['done'] if p['done'] is not None else '?'}/{p['total'] if p['total'] is not None else '?'}"


def _show(args: argparse.Namespace, change: str | None) -> int:
    stuck_after = load_config(args).jobs.stuck_after
    with store(args) as s:
        if change == "cancel":
            job = s.cancel_job(args.job_id, time.time())
        elif change == "retry":
            before = s.get_job(args.job_id)
            job = s.retry_job(args.job_id, time.time())
            if job is not None and before is not None and before.state not in ("dead", "cancelled"):
                raise Failure(f"job {args.job_id} is {before.state}: only dead or cancelled jobs can be retried")
        else:
            job = s.get_job(args.job_id)
    if job is None:
        raise Failure(f"no job {args.job_id}")
    view = job_view(job, stuck_after)
    if args.json:
        emit_json(view)
        return 0
    width = max(len(k) for k in view)
    for key, value in view.items():
        shown = when(value) if key.endswith("_at") or key == "lease_until" else value
        print(f"{key.ljust(width)}  {'-' if shown is None else shown}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    return _show(args, None)


def run_cancel(args: argparse.Namespace) -> int:
    return _show(args, "cancel")


def run_retry(args: argparse.Namespace) -> int:
    return _show(args, "retry")
