"""`keel loadtest run PROFILE.yaml` and `keel loadtest record`: load before a rollout, on loopback only.

`run` starts the configured Keel (`-c keel.yaml`) with its providers simulated as the profile says,
offers the profile's traffic at each multiple, and prints what broke first (`--html` writes the report
with plots; `--json` the figures). `--url URL --key KEY` drives an already running Keel instead (a
loopback address only; CPU and queues are then sampled only if `--pid` names its process).
`record --since 1d` writes a profile of the traced traffic: rate, mix, sizes, providers' latency,
speed, error rate and rate limits.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import yaml

from keel.cli.context import load_config, store
from keel.cli.output import Failure, emit_json
from keel.errors import ConfigError


def register(p: argparse.ArgumentParser) -> None:
    verbs = p.add_subparsers(dest="verb", required=True)
    r = verbs.add_parser("run", help="replay a profile at 1x, 2x, 5x, 10x and name the first bottleneck")
    r.add_argument("profile", help="a traffic profile (YAML); `keel loadtest record` writes one")
    r.add_argument("--multiples", help="override the profile's, e.g. 1,2,5,10")
    r.add_argument("--duration", type=float, help="seconds per multiple (override the profile's)")
    r.add_argument("--workers", type=int, default=1, help="gateway processes (keel serve --workers N)")
    r.add_argument("--url", help="drive a running Keel at this loopback URL instead of starting one")
    r.add_argument("--key", help="with --url: the virtual key to call with")
    r.add_argument("--pid", type=int, help="with --url: the gateway's process, to sample its CPU and queues")
    r.add_argument("--html", help="write the HTML report here")
    r.add_argument("--json", action="store_true")
    r.set_defaults(run=run)
    rec = verbs.add_parser("record", help="write a profile of the traced traffic (YAML on stdout)")
    rec.add_argument("--since", default="1d", help="unix seconds or a duration back from now (default 1d)")
    rec.add_argument("--until", help="unix seconds or a duration back from now (default: now)")
    rec.set_defaults(run=run_record)


def run(args: argparse.Namespace) -> int:
    from keel.loadtest import profile as profiles
    from keel.loadtest import report
    from keel.loadtest.run import run as run_all
    from keel.loadtest.stage import is_loopback, staged

    path = Path(args.profile)
    if not path.exists():
        raise Failure(f"no such profile: {path}")
    raw = yaml.safe_load(path.read_text()) or {}
    if args.multiples:
        raw["multiples"] = [float(m) for m in args.multiples.split(",")]
    if args.duration:
        raw["duration_s"] = args.duration
    profile = profiles.parse(raw, str(path))

    def progress(line: str) -> None:
        print(f"keel loadtest: {line}", file=sys.stderr)

    if args.url:
        if not is_loopback(args.url):
            raise Failure(f"--url {args.url}: load tests send traffic to loopback addresses only (127.0.0.1, ::1)")
        if not args.key:
            raise Failure("--url needs --key: the virtual key to call with")
        verdict = asyncio.run(run_all(args.url, args.key, args.pid, profile, trace_queue_size=0, progress=progress))
        notes: tuple[str, ...] = (f"drove the running Keel at {args.url}",)
    else:
        cfg = load_config(args)
        config_path = Path(args.config or "keel.yaml")
        with staged(config_path, profile, workers=args.workers) as under_test:
            progress(f"started the Keel under test at {under_test.url} (pid {under_test.pid})")
            verdict = asyncio.run(
                run_all(
                    under_test.url,
                    under_test.key,
                    under_test.pid,
                    profile,
                    trace_queue_size=cfg.traces.queue_size,
                    progress=progress,
                )
            )
            notes = under_test.notes
    if args.html:
        Path(args.html).write_text(report.page(verdict, notes, f"keel loadtest {path.name}"))
    if args.json:
        bottleneck = verdict.bottleneck
        emit_json(
            {
                "phases": [report.summary_view(s) for s in verdict.summaries],
                "first_bottleneck": None
                if bottleneck is None
                else {"multiple": verdict.first, "what": bottleneck.what, "detail": bottleneck.detail},
                "breaches": {
                    f"{m:g}": [{"what": b.what, "detail": b.detail} for b in bs] for m, bs in verdict.breaches.items()
                },
                "generator_behind_at": list(verdict.tainted),
                "notes": list(notes),
            }
        )
    else:
        sys.stdout.write(report.terminal(verdict, notes))
    return 0


def run_record(args: argparse.Namespace) -> int:
    from keel.loadtest.profile import record
    from keel.traces.writer import parse_window

    since, until = parse_window(args.since, args.until, time.time())
    with store(args) as s:
        try:
            profile = record(s, since, until)
        except ConfigError as err:
            raise Failure(str(err)) from None
    sys.stdout.write(yaml.safe_dump(profile.model_dump(exclude_defaults=False), sort_keys=False))
    return 0
