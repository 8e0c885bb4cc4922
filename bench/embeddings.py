"""Throughput of Keel's local embedding model beside this machine's limit for it, and one text's latency under load.

    python bench/embeddings.py                 # ~3 min: every runtime, 16/64/256-token texts, then the gateway part
    python bench/embeddings.py --quick         # ~1 min
    python bench/embeddings.py --threads 2     # both cores (ONNX Runtime's intra-op pool, OPENBLAS_NUM_THREADS)

For 16-, 64- and 256-token texts (exact token counts, [CLS]/[SEP] included; 4,096 tokens per call, so 256,
64 and 16 texts per call), prints texts/s and tokens/s of `LocalEmbedder.embed` on each runtime (onnx,
onnx-int8, numpy), tokenization included, beside the **limit**: the model's FLOPs per token at that length
(6 layers × (2·384·(1152 + 384 + 1536) + 2·1536·384 + 4·384·length): projections, feed-forward and attention)
divided into the FLOP/s that a plain matrix-multiply benchmark of the model's own dense shapes (4,096 rows
× 384→1152, 384→384, 384→1536, 1536→384) reaches here on as many threads, the better of numpy/OpenBLAS and
ONNX Runtime's MatMul; attention's products are counted at that rate too. All rates are per CPU-second of
this process (wall time is at the mercy of other work on a shared machine); with one thread, per core.
Figures alternate in rounds (limit, then each runtime, per length) so load drift hits all alike; each is
the best of its rounds.

Then one short text's latency (`embed([text])`, p50/p99, a different text per call): idle, then while `keel
serve` forwards chat calls from wrk (4 connections) to bench/upstream.py on this machine. The gateway's
requests/s during the measurement are printed beside it, and the CPU time of the calling thread per call (the
cost itself; wall time adds whatever else the cores were running). Target (issue 14): ≥ 70% of the limit for 256-token
chunks in fp32; one short text ≤ 10 ms p50 while the gateway serves traffic.
"""

from __future__ import annotations

import argparse
import os
import sys

THREADS = int(sys.argv[sys.argv.index("--threads") + 1]) if "--threads" in sys.argv else 1
os.environ.setdefault("OPENBLAS_NUM_THREADS", str(THREADS))  # read when numpy loads: before the imports below

import random  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from keel.embedding.model import LocalEmbedder  # noqa: E402

LENGTHS = (16, 64, 256)
TOKENS_PER_CALL = 4096
WIDTH, HEADS, LAYERS, QKV, FF = 384, 12, 6, 1152, 1536
WORD_TEXT = (
    "how can i make my python service answer faster when the database is slow and the cache misses often "
    "what is the best way to summarise a long customer email into three bullet points for the support team "
    "please translate this paragraph into french keeping the tone friendly and the product names unchanged "
    "why does the invoice total differ from the sum of the line items after tax and discounts are applied "
    "write a short sql query that counts active users per country in the last thirty days ordered by count"
)
WORDS = sorted(set(WORD_TEXT.split()))


def flops_per_token(length: int) -> float:
    projections = 2 * WIDTH * (QKV + WIDTH + FF) + 2 * FF * WIDTH
    return LAYERS * (projections + 4 * WIDTH * length)


class Texts:
    """Distinct texts of exactly `length` tokens: words of one token each, trimmed by the tokenizer's count."""

    def __init__(self, embedder: LocalEmbedder) -> None:
        self.embedder = embedder
        self.rng = random.Random(14)
        singles = [w for w, n in zip(WORDS, embedder.count_tokens(WORDS), strict=True) if n == 3]
        self.words = singles

    def make(self, count: int, length: int) -> list[str]:
        out = [" ".join(self.rng.choice(self.words) for _ in range(length - 2)) for _ in range(count)]
        assert set(self.embedder.count_tokens(out)) == {length}, "texts must have exactly `length` tokens"
        return out


def rate(call: Callable[[], Any], seconds: float) -> float:
    """Calls per CPU-second of this process (all its threads), over at least `seconds` of wall time, after one
    warm-up call. CPU time, not wall time: other work on the machine's cores then slows the figure (shared
    caches) but does not steal from it, so runtimes and the limit compare fairly on a loaded machine."""
    call()
    done, started, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds or done < 2:
        call()
        done += 1
    return done / (time.process_time() - cpu)


def matmul_flops(length: int, threads: int, seconds: float) -> float:
    """FLOP/s of the model's own matrix products at this length: numpy's and ONNX Runtime's, the better."""
    batch = TOKENS_PER_CALL // length
    rows = batch * length
    rng = np.random.default_rng(0)
    x, h = rng.random((rows, WIDTH), dtype=np.float32), rng.random((rows, FF), dtype=np.float32)
    w = {n: rng.random(shape, dtype=np.float32) for n, shape in (("qkv", (WIDTH, QKV)), ("out", (WIDTH, WIDTH)))}
    w |= {"up": rng.random((WIDTH, FF), dtype=np.float32), "down": rng.random((FF, WIDTH), dtype=np.float32)}
    flops = rows * (flops_per_token(0) / LAYERS)  # one layer's dense products (attention's run at their rate)

    def numpy_layer() -> None:
        x @ w["qkv"], x @ w["out"], x @ w["up"], h @ w["down"]

    best = rate(numpy_layer, seconds) * flops
    session = _ort_layer(w, threads)
    feed = {"x": x, "h": h}
    return max(best, rate(lambda: session.run(None, feed), seconds) * flops)


def _ort_layer(w: dict[str, Any], threads: int) -> Any:
    from onnx import TensorProto, helper, numpy_helper

    from keel.embedding import graph

    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("x", "h")]
    nodes = [
        helper.make_node("MatMul", ["x", "qkv"], ["o1"]),
        helper.make_node("MatMul", ["x", "out"], ["o2"]),
        helper.make_node("MatMul", ["x", "up"], ["o3"]),
        helper.make_node("MatMul", ["h", "down"], ["o4"]),
    ]
    outputs = [helper.make_tensor_value_info(f"o{i}", TensorProto.FLOAT, None) for i in range(1, 5)]
    inits = [numpy_helper.from_array(v, n) for n, v in w.items()]
    model = helper.make_model(
        helper.make_graph(nodes, "products", inputs, outputs, inits),
        opset_imports=[helper.make_opsetid("", 17)],
        ir_version=9,
    )
    return graph.session(model, threads)


def throughput(runtimes: list[str], threads: int, seconds: float, rounds: int) -> None:
    embedders = {r: LocalEmbedder(runtime=r, threads=threads) for r in runtimes}
    texts = Texts(next(iter(embedders.values())))
    best: dict[tuple[str, int], float] = {}
    for round_ in range(rounds):
        for length in LENGTHS:
            tokens = flops_per_token(length)
            limit = matmul_flops(length, threads, seconds) / tokens
            best[("limit", length)] = max(best.get(("limit", length), 0.0), limit)
            batch = texts.make(TOKENS_PER_CALL // length, length)
            for name, embedder in embedders.items():
                tps = rate(lambda e=embedder, b=batch: e.embed(b), seconds) * TOKENS_PER_CALL
                best[(name, length)] = max(best.get((name, length), 0.0), tps)
        print(f"  round {round_ + 1}/{rounds} done, load average {os.getloadavg()[0]:.1f}", file=sys.stderr)
    print(f"\n{'tokens/text':<12}{'runtime':<11}{'texts/s':>10}{'tokens/s':>10}{'of limit':>10}")
    for length in LENGTHS:
        limit = best[("limit", length)]
        print(f"{length:<12}{'limit':<11}{limit / length:>10.1f}{limit:>10.0f}{'100%':>10}")
        for name in embedders:
            tps = best[(name, length)]
            print(f"{'':<12}{name:<11}{tps / length:>10.1f}{tps:>10.0f}{tps / limit:>10.0%}")
    gflops = {length: best[("limit", length)] * flops_per_token(length) / 1e9 for length in LENGTHS}
    print(
        "limit = matrix-multiply FLOP/s at the model's shapes ("
        + ", ".join(f"{g:.0f} GFLOP/s at {n}" for n, g in gflops.items())
        + ") / FLOPs per token ("
        + ", ".join(f"{flops_per_token(n) / 1e6:.1f} M at {n}" for n in LENGTHS)
        + ")"
    )


def latencies(embedder: LocalEmbedder, texts: list[str]) -> tuple[float, float, float]:
    """(p50 ms, p99 ms, p50 CPU ms of the calling thread) of one `embed([text])` call per text."""
    wall, cpu = [], []
    for text in texts:
        started, thread = time.perf_counter(), time.thread_time()
        embedder.embed([text])
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append((time.thread_time() - thread) * 1000)
    wall.sort()
    return statistics.median(wall), wall[int(0.99 * (len(wall) - 1))], statistics.median(cpu)


def under_traffic(runtime: str, threads: int, calls: int) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    import run

    embedder = LocalEmbedder(runtime=runtime, threads=threads)
    texts = Texts(embedder)
    print(f"\none call, one 16-token text ({runtime}, {threads} thread(s)), {calls} calls:")
    p50, p99, cpu = latencies(embedder, texts.make(calls, 16))
    print(f"  idle                      p50 {p50:6.2f} ms   p99 {p99:6.2f} ms   CPU p50 {cpu:5.2f} ms")
    with tempfile.TemporaryDirectory(prefix="keel-bench-embed-") as tmp, run.running(run.Bench(Path(tmp), False)) as b:
        script = b.tmp / "chat.lua"
        script.write_text(run.WRK_LUA.format(body=run.chat_body("bench").decode(), key=b.key))
        url = f"http://127.0.0.1:{b.ports['gateway']}/v1/chat/completions"
        load = subprocess.Popen(
            ["wrk", "-t1", "-c4", "-d600s", "-s", str(script), url], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        try:
            time.sleep(1.0)  # wrk connected and the gateway warm
            before = run.upstream_answered(b, "up0")
            started = time.perf_counter()
            p50, p99, cpu = latencies(embedder, texts.make(calls, 16))
            served = (run.upstream_answered(b, "up0") - before) / (time.perf_counter() - started)
        finally:
            load.terminate()
            load.wait(timeout=10)
    print(
        f"  gateway serving {served:5.0f}/s  p50 {p50:6.2f} ms   p99 {p99:6.2f} ms   CPU p50 {cpu:5.2f} ms"
        "   (target p50 <= 10 ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 1 s per figure (default 3 rounds of 1.5 s)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op / BLAS threads (1: one worker's share)")
    parser.add_argument("--runtimes", default="onnx,onnx-int8,numpy", help="comma-separated LocalEmbedder runtimes")
    parser.add_argument("--no-gateway", action="store_true", help="skip the latency under gateway traffic")
    parser.add_argument("--no-throughput", action="store_true", help="only the latency figures")
    args = parser.parse_args()
    runtimes = args.runtimes.split(",")
    print(
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {args.threads} thread(s) "
        f"(OPENBLAS_NUM_THREADS {os.environ['OPENBLAS_NUM_THREADS']}); {TOKENS_PER_CALL} tokens per embed call"
    )
    for name in runtimes:
        started = time.perf_counter()
        model_id = LocalEmbedder(runtime=name, threads=args.threads).model_id
        print(f"  {name:<10} {model_id}: ready in {(time.perf_counter() - started) * 1000:.0f} ms")
    if not args.no_throughput:
        throughput(runtimes, args.threads, 1.0 if args.quick else 1.5, 1 if args.quick else 3)
    if not args.no_gateway:
        for name in runtimes[:2]:
            under_traffic(name, args.threads, 200 if args.quick else 500)


if __name__ == "__main__":
    main()
