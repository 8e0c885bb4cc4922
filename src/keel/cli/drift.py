"""`keel drift`: does a feature's (or alias's) recent traffic differ from a reference window of it?

Reads sampled traces from the configured store (payloads from its blob store), embeds the prompts with
the local model and prints each test: statistic, p-value, and whether it is significant at `--alpha`.
Exit 0 when it ran; with `--check`, 100 when anything drifted (for a scheduled job); 1 on failure.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from keel.cli.context import load_config, store
from keel.cli.output import Failure, emit_json, table

DRIFTED = 100


def register(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--feature", help="the x-keel-feature to compare")
    which.add_argument("--alias", help="the model alias to compare")
    p.add_argument("--tenant", help="only this tenant's calls")
    p.add_argument("--since", default="1d", help="the recent window, back from now (default 1d)")
    p.add_argument("--reference", default="7d..1d", help="FAR..NEAR back from now (default 7d..1d)")
    p.add_argument("--alpha", type=float, default=0.01, help="significance level (default 0.01)")
    p.add_argument("--max-samples", type=int, default=500, help="calls read per window, at most 2000 (default 500)")
    p.add_argument("--permutations", type=int, default=500, help="for the input test's p-value (default 500)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-embed", action="store_true", help="skip input drift (no embedding model needed)")
    p.add_argument("--check", action="store_true", help=f"exit {DRIFTED} when any test is significant")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from keel.evals import drift
    from keel.traces.builder import blobs_from

    if not 0 < args.alpha < 1:
        raise Failure("--alpha must be between 0 and 1, e.g. 0.01")
    if not 10 <= args.max_samples <= 2000 or not 10 <= args.permutations <= 10_000:
        raise Failure("--max-samples must be 10..2000 and --permutations 10..10000")
    try:
        recent, reference = drift.windows(args.since, args.reference, time.time())
    except drift.DriftError as err:
        raise Failure(str(err)) from None
    spec = drift.DriftSpec(
        recent, reference, feature=args.feature, alias=args.alias, tenant=args.tenant, max_samples=args.max_samples,
        permutations=args.permutations, seed=args.seed, alpha=args.alpha,
    )  # fmt: skip
    blobs = blobs_from(load_config(args))
    try:
        with store(args) as s:
            before, after = drift.sample(s, blobs, spec, reference), drift.sample(s, blobs, spec, recent)
            scores = drift.window_scores(s, spec, reference), drift.window_scores(s, spec, recent)
    finally:
        blobs.close()
    report = drift.compare(spec, before, after, None if args.no_embed else _embedder(), scores)
    if args.json:
        emit_json(report.json())
    else:
        _print(report)
    return DRIFTED if args.check and report.drifted else 0


def _embedder() -> Any:
    from keel.embedding.model import LocalEmbedder, ModelNotInstalled

    try:
        return LocalEmbedder().embed
    except ModelNotInstalled as err:
        raise Failure(f"{err} (or pass --no-embed to skip input drift)") from None


def _print(report: Any) -> None:
    view = report.json()
    print(f"calls sampled: reference {view['calls']['reference']}, recent {view['calls']['recent']}")
    rows = [
        [name, t["test"], f"{t['statistic']:.4g}", f"{t['p_value']:.4g}", _side(t["reference"]), _side(t["recent"]),
         "DRIFT" if t["significant"] else "-"]
        for name, t in view["tests"].items()
    ]  # fmt: skip
    table(["test", "method", "statistic", "p", "reference", "recent", f"p<{view['alpha']:g}"], rows)
    for name, why in view["unavailable"].items():
        print(f"{name}: unavailable: {why}")


def _side(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
