"""`keel cache calibrate`: the semantic threshold that keeps false hits within a budget on labelled pairs.

    keel cache calibrate --pairs pairs.tsv [--max-false-hits 0.01] [--alias NAME] [--embedder local|local-int8]
        [--hold-out] [--json]

Embeds every text with the local model (all-MiniLM-L6-v2, as the gateway does), scores each pair as the
cache would (keel/cache/pair.py), and prints the lowest threshold whose false-hit rate on the file is
within the budget even at the upper end of its Wilson 95% interval (`--measured`: the rate itself), and
the recall there. `--hold-out` chooses on the odd rows
and reports the even rows too, as a check that the choice carries over to pairs it has not seen.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from keel.cli.output import Failure, emit_json


def register(p: argparse.ArgumentParser) -> None:
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    c = verbs.add_parser("calibrate", help="choose cache.semantic.threshold from labelled pairs")
    c.add_argument("--pairs", required=True, type=Path, help="TSV: two texts and a label (1 = the same question)")
    c.add_argument("--max-false-hits", type=float, default=0.01, help="share of different pairs served (0.01)")
    c.add_argument("--alias", help="print the setting for this alias (models.NAME.cache.threshold)")
    c.add_argument("--hold-out", action="store_true", help="choose on odd rows, report on even rows too")
    c.add_argument(
        "--measured", action="store_true", help="keep the measured false-hit rate within budget, not its 95%% bound"
    )
    c.add_argument(
        "--embedder",
        choices=("local", "local-int8"),
        default="local",
        help="the local embedder to calibrate, as cache.semantic.embedder (local)",
    )
    c.add_argument("--no-verify", action="store_true", help="cosine alone, as with cache.semantic.verify: false")
    c.add_argument("--json", action="store_true")
    c.set_defaults(run=calibrate)


def calibrate(args: argparse.Namespace) -> int:
    from keel.cache import calibrate as cal
    from keel.cache import pair
    from keel.embedding.model import LocalEmbedder, ModelNotInstalled

    if not 0 <= args.max_false_hits < 1:
        raise Failure("--max-false-hits must be a share in [0, 1), e.g. 0.01 for 1%")
    try:
        pairs = cal.read_pairs(args.pairs)
    except (OSError, ValueError) as err:
        raise Failure(f"--pairs: {err}") from None
    try:
        runtime = "onnx-int8" if args.embedder == "local-int8" else "auto"
        embedder = LocalEmbedder(runtime=runtime, threads=os.cpu_count() or 1)  # an offline command: every core
    except ModelNotInstalled as err:
        raise Failure(str(err)) from None
    distinct = sorted({t for p in pairs for t in (p.first, p.second)})
    vectors = dict(zip(distinct, embedder.embed(distinct), strict=True))

    def scores(rows: list[cal.LabelledPair]) -> list[float | None]:
        out: list[float | None] = []
        for p in rows:
            similarity = float(vectors[p.first] @ vectors[p.second])
            out.append(similarity if args.no_verify else pair.adjusted(p.first, p.second, similarity))
        return out

    tune, held = cal.halves(pairs) if args.hold_out else (pairs, [])
    chosen = cal.choose(scores(tune), [p.same for p in tune], args.max_false_hits, confident=not args.measured)
    default = cal.measure(scores(tune), [p.same for p in tune], pair.DEFAULT_THRESHOLD, args.max_false_hits)
    check = cal.measure(scores(held), [p.same for p in held], chosen.threshold, args.max_false_hits) if held else None
    key = f"models.{args.alias}.cache.threshold" if args.alias else "cache.semantic.threshold"
    if args.json:
        emit_json(
            {
                "setting": key,
                "model": embedder.model_id,
                "verify": not args.no_verify,
                "chosen": _view(chosen),
                "default": _view(default),
                "held_out": None if check is None else _view(check),
            }
        )
        return 0
    print(
        f"{len(pairs)} pairs from {args.pairs}; model {embedder.model_id}; verify {'off' if args.no_verify else 'on'}"
    )
    if held:
        print(f"chosen on the odd rows ({len(tune)}), checked on the even rows ({len(held)})")
    print(f"\n{key}: {chosen.threshold:.3f}")
    _lines("at it", chosen)
    _lines(f"at the default {pair.DEFAULT_THRESHOLD:.3f}", default)
    if check is not None:
        _lines("held-out rows", check)
    if not chosen.confident:
        print(
            f"\nnote: with {chosen.negatives} different-question pairs the 95% interval reaches "
            f"{chosen.interval[1]:.2%}, over the {args.max_false_hits:.2%} budget; label more pairs"
        )
    return 0


def _lines(label: str, c: Any) -> None:
    low, high = c.interval
    print(
        f"  {label:<22} false hits {c.false_hits}/{c.negatives} = {c.false_hit_rate:.2%} "
        f"(95% {low:.2%}–{high:.2%}), recall {c.true_hits}/{c.positives} = {c.recall:.1%}"
    )


def _view(c: Any) -> dict[str, Any]:
    return {
        "threshold": c.threshold,
        "max_false_hits": c.max_false_hits,
        "pairs": c.pairs,
        "negatives": c.negatives,
        "positives": c.positives,
        "false_hits": c.false_hits,
        "false_hit_rate": c.false_hit_rate,
        "false_hit_interval_95": list(c.interval),
        "true_hits": c.true_hits,
        "recall": c.recall,
        "confident": c.confident,
    }
