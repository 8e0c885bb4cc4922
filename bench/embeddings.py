"""Throughput and latency of Keel's local embedding model (keel.embedding.model, all-MiniLM-L6-v2 in numpy).

    python bench/embeddings.py            # about a minute
    python bench/embeddings.py --quick    # a few seconds per figure less

Prints sentences/s at batch sizes 1, 8, 32 and 128 for ~20-token and ~85-token texts, and the latency of
one single-text call (p50/p99), the semantic cache's per-request cost. Texts are made here from a fixed word
list (seeded), so every run embeds the same tokens; every text in a run is distinct. Figures are comparable
only on an idle machine (the load average is printed); with other work on the cores, OPENBLAS_NUM_THREADS=1
was about twice as fast as OpenBLAS's default of one thread per core.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

from keel.embedding.model import LocalEmbedder

WORD_TEXT = (
    "how can i make my python service answer faster when the database is slow and the cache misses often "
    "what is the best way to summarise a long customer email into three bullet points for the support team "
    "please translate this paragraph into french keeping the tone friendly and the product names unchanged "
    "why does the invoice total differ from the sum of the line items after tax and discounts are applied "
    "write a short sql query that counts active users per country in the last thirty days ordered by count"
)
WORDS = WORD_TEXT.split()


def texts(count: int, words: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(words)) + f" #{seed}-{i}" for i in range(count)]


def throughput(embedder: LocalEmbedder, batch: int, words: int, seconds: float) -> float:
    """Sentences per second at one batch size, over fresh texts, for at least `seconds`."""
    embedder.embed(texts(batch, words, seed=-batch))  # warm-up
    done, started, seed = 0, time.perf_counter(), 0
    while (elapsed := time.perf_counter() - started) < seconds or done == 0:
        seed += 1
        embedder.embed(texts(batch, words, seed=batch * 100_000 + seed))
        done += batch
    return done / elapsed


def latency(embedder: LocalEmbedder, words: int, calls: int) -> tuple[float, float]:
    """p50 and p99 in ms of one call embedding one text."""
    samples = []
    for text in texts(calls, words, seed=7 + words):
        started = time.perf_counter()
        embedder.embed([text])
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(0.99 * (len(samples) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 s per figure instead of 4")
    args = parser.parse_args()
    seconds = 1.0 if args.quick else 4.0
    started = time.perf_counter()
    embedder = LocalEmbedder()
    print(f"model {embedder.model_id}: loaded in {(time.perf_counter() - started) * 1000:.0f} ms")
    blas = os.environ.get("OPENBLAS_NUM_THREADS", "unset (one per core)")
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; OPENBLAS_NUM_THREADS {blas}")
    shapes = {"short": 14, "long": 75}  # words per text: about 20 and 100 tokens with [CLS]/[SEP]
    for name, words in shapes.items():
        sample = texts(64, words, seed=1)
        tokens = [len(e.ids) for e in embedder._tokenizer.encode_batch(sample)]
        print(f"{name} texts: {statistics.mean(tokens):.0f} tokens on average")
    print(f"\n{'texts':<8}{'batch':>6}{'sentences/s':>14}{'ms/sentence':>14}")
    for name, words in shapes.items():
        for batch in (1, 8, 32, 128):
            rate = throughput(embedder, batch, words, seconds)
            print(f"{name:<8}{batch:>6}{rate:>14.0f}{1000 / rate:>14.2f}")
    print("\none call, one text (the cache lookup's embedding cost):")
    for name, words in shapes.items():
        p50, p99 = latency(embedder, words, calls=200 if args.quick else 500)
        print(f"  {name:<6} p50 {p50:6.2f} ms   p99 {p99:6.2f} ms")


if __name__ == "__main__":
    main()
