"""Input drift on real text: how much of a second topic the kernel test detects, and what it costs.

`python bench/drift.py [--n 300] [--mix 0,0.05,0.1,0.2,0.3] [--trials 3]`

Text: first sentences of MS MARCO passages (../shared/data/retrieval/msmarco-5k, read in place). The
second topic is the passages about health and medicine (by keywords); the first is the rest. Each trial
draws a reference window of `n` first-topic texts and a recent window of `n` texts with `mix` of them
from the second topic (0: an unchanged split), embeds both with the local model and runs `mmd_test`
(500 permutations). Prints the p-values, the share of trials detected at p < 0.01, and the time spent
embedding and testing. A figure on a shared 2-core machine is indicative only.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from keel.embedding.model import LocalEmbedder
from keel.evals.stats import mmd_test

DATA = "shared/data/retrieval/msmarco-5k/corpus.jsonl"
CORPUS = next((p / DATA for p in Path(__file__).resolve().parents if (p / DATA).is_file()), Path("/work") / DATA)
MEDICAL = re.compile(
    r"\b(symptoms?|disease|blood|pain|infection|doctor|medical|cancer|treatment|patients?|heart|diabetes|surgery)\b",
    re.IGNORECASE,
)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--corpus", default=str(CORPUS))
    p.add_argument("--n", type=int, default=300, help="texts per window")
    p.add_argument("--mix", default="0,0.05,0.1,0.2,0.3", help="shares of the second topic in the recent window")
    p.add_argument("--trials", type=int, default=3)
    args = p.parse_args()
    with open(args.corpus, encoding="utf-8") as f:
        texts = [json.loads(line)["text"].split(". ")[0][:160] for line in f]
    first = [t for t in texts if not MEDICAL.search(t)]
    second = [t for t in texts if MEDICAL.search(t)]
    print(f"{len(first)} first-topic and {len(second)} second-topic texts; n={args.n} per window")
    shuffle = random.Random(99)
    shuffle.shuffle(first)
    shuffle.shuffle(second)
    first, second = first[: 3 * args.n], second[: args.n]  # the pools trials draw from
    model = LocalEmbedder()
    t0 = time.perf_counter()
    a, b = model.embed(first), model.embed(second)
    embed_s = time.perf_counter() - t0
    n_texts = len(first) + len(second)
    print(f"embedded {n_texts} texts in {embed_s:.1f} s ({n_texts / embed_s:.0f} texts/s)")
    print(f"{'mix':>5}  {'detected at p<0.01':>18}  p-values (one per trial)")
    test_s = []
    for mix in (float(x) for x in args.mix.split(",")):
        ps = []
        for trial in range(args.trials):
            rng = random.Random(trial)
            ia, ib = rng.sample(range(len(a)), 2 * args.n), rng.sample(range(len(b)), args.n)
            k = round(args.n * mix)
            reference = a[ia[: args.n]]
            recent = a[ia[args.n : 2 * args.n - k]]
            if k:
                import numpy as np

                recent = np.vstack([recent, b[ib[:k]]])
            start = time.perf_counter()
            ps.append(mmd_test(reference, recent, seed=trial).p_value)
            test_s.append(time.perf_counter() - start)
        hits = sum(p < 0.01 for p in ps)
        print(f"{mix:5.2f}  {hits:>10}/{args.trials:<7}  {', '.join(f'{p:.4f}' for p in ps)}")
    print(f"kernel test: {sum(test_s) / len(test_s):.2f} s per window pair (500 permutations, {2 * args.n} texts)")


if __name__ == "__main__":
    main()
