"""RAG ingestion end to end against the embedder alone: `python bench/rag_ingest.py [--docs 60] [--rounds 2]`.

A mixed folder (md, txt, html, pdf, docx: every fifth document of each kind) is made from MS MARCO passages
(`../shared/data/retrieval/msmarco-5k`, 12 passages a document, each under a heading) and parsed and chunked
once. Then, alternately in the same process, `--rounds` times each:
- embedder: all-MiniLM-L6-v2 alone (keel.embedding.model) on exactly the texts the index embeds for those
  chunks (title and heading path, then the text: keel.rag.index.embed_text), in the index's batches;
- ingestion: a runtime on a fresh SQLite file with its job pool (jobs.workers 4), every file put through
  `Library.put` as the CLI does, timed from the first put to the last document `indexed` (parse → chunk
  → embed → index, as jobs).
Prints chunks/s and tokens/s (the chunker's token count) of each, and ingestion as a share of the
embedder's throughput (target ≥ 85 %). Both models are loaded and warmed before any timing. A figure on
a shared 2-core machine is indicative only.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from tests.e2e.rag_files import docx, html, pdf  # noqa: E402

from keel import config as keel_config  # noqa: E402
from keel.rag.chunk import ChunkingSpec, chunk  # noqa: E402
from keel.rag.collections import collection_in  # noqa: E402
from keel.rag.documents import Fields, Library  # noqa: E402
from keel.rag.index import ChunkIn, embed_text  # noqa: E402
from keel.rag.index_models import BATCH  # noqa: E402
from keel.rag.parse import kind_of, parse  # noqa: E402
from keel.runtime.components import Runtime  # noqa: E402

CORPUS = ROOT.parent.parent / "shared" / "data" / "retrieval" / "msmarco-5k" / "corpus.jsonl"
PER_DOC = 12
KINDS = ("md", "txt", "html", "pdf", "docx")


def passages(n: int) -> list[tuple[str, str]]:
    path = CORPUS if CORPUS.exists() else Path("/work/shared/data/retrieval/msmarco-5k/corpus.jsonl")
    out = []
    with path.open("rb") as f:
        for line in f:
            row = orjson.loads(line)
            out.append((row["_id"], " ".join(row["text"].split())))
            if len(out) == n:
                break
    return out


def wrap(text: str, width: int = 90) -> list[str]:
    lines, current = [], ""
    for word in text.split():
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}".strip()
    return [*lines, current] if current else lines


def make_folder(root: Path, docs: int) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    found = passages(docs * PER_DOC)
    files = []
    for d in range(docs):
        group = found[d * PER_DOC : (d + 1) * PER_DOC]
        kind = KINDS[d % len(KINDS)]
        path = root / f"doc{d:04d}.{kind}"
        if kind == "md":
            path.write_text(f"# Notes {d}\n\n" + "\n\n".join(f"## Passage {i}\n\n{t}" for i, t in group))
        elif kind == "txt":
            path.write_text("\n\n".join(t for _, t in group))
        elif kind == "html":
            path.write_bytes(html(f"Notes {d}", f"Notes {d}", [t for _, t in group]))
        elif kind == "pdf":
            lines = [line for _, t in group for line in wrap(t)]
            path.write_bytes(pdf(lines[:50], title=f"Notes {d}"))  # one page holds ~50 lines
        else:
            path.write_bytes(docx(f"Notes {d}", [(f"Passage {i}", [t]) for i, t in group]))
        files.append(path)
    return files


def chunked(files: list[Path]) -> list[tuple[str, ChunkIn]]:
    """(the title the index embeds with, chunk) of every file, as ingestion cuts them."""
    out = []
    for f in files:
        kind = kind_of(f.name)
        assert kind is not None
        for c in chunk(parse(f.read_bytes(), kind), ChunkingSpec()):
            out.append((f.stem, c))
    return out


def bench_embedder(texts: list[str]) -> float:
    from keel.embedding.model import LocalEmbedder

    model = LocalEmbedder()
    model.embed(texts[:8])  # warm
    start = time.perf_counter()
    for i in range(0, len(texts), BATCH):
        model.embed(texts[i : i + BATCH])
    return time.perf_counter() - start


def runtime_config(tmp: Path) -> Any:
    raw = {
        "storage": {"url": f"sqlite:///{tmp}/keel.db"},
        "traces": {"spill_dir": str(tmp / "spill"), "blobs_url": f"file://{tmp}/blobs"},
        "providers": {"sim": {"type": "simulated"}},
        "models": {"demo": {"targets": [{"provider": "sim", "model": "simulated-1"}]}},
        "jobs": {"poll_s": 0.05, "workers": 4},
    }
    (tmp / "keel.yaml").write_text(yaml.safe_dump(raw))
    return keel_config.load(tmp / "keel.yaml", env={})


async def bench_ingest(files: list[Path]) -> tuple[float, int, int]:
    """Seconds from the first put to the last document indexed; chunks and documents indexed."""
    from keel.rag.index import Index

    with tempfile.TemporaryDirectory(prefix="keel-bench-rag-") as tmp:
        runtime = Runtime.build(runtime_config(Path(tmp)))
        index, library = runtime.get(Index), runtime.get(Library)
        await (await index.models.get("local")).embed(["warm"])  # the model loads before the clock starts
        await runtime.start()
        try:
            library.create_collection("bench", collection_in({"name": "docs", "model": "local"}))
            start = time.perf_counter()
            for f in files:
                await asyncio.to_thread(library.put, "bench", "docs", f.name, f.read_bytes(), Fields(),
                                        filename=f.name)  # fmt: skip
                runtime.jobs.wakeup.set() if runtime.jobs else None
            while True:
                rows = await asyncio.to_thread(runtime.store.list_documents, "bench", "docs", limit=10_000)
                if all(r.status in ("indexed", "failed") for r in rows):
                    break
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - start
            failed = [r.id for r in rows if r.status == "failed"]
            if failed:
                raise SystemExit(f"documents failed: {failed}")
            return elapsed, sum(r.chunks or 0 for r in rows), len(rows)
        finally:
            await runtime.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="keel-bench-rag-files-") as folder:
        files = make_folder(Path(folder), args.docs)
        pieces = chunked(files)
        texts = [embed_text(title, c) for title, c in pieces]
        tokens = sum(c.tokens for _, c in pieces)
        print(f"{len(files)} documents ({', '.join(KINDS)}), {len(pieces)} chunks, {tokens} tokens "
              f"({tokens / len(pieces):.0f} per chunk)")  # fmt: skip
        ratios = []
        for r in range(1, args.rounds + 1):
            alone = bench_embedder(texts)
            took, n, docs = asyncio.run(bench_ingest(files))
            assert n == len(pieces), f"ingestion made {n} chunks, the chunker {len(pieces)}"
            ratio = (len(pieces) / took) / (len(pieces) / alone)
            ratios.append(ratio)
            print(f"round {r}: embedder alone {len(pieces) / alone:7.1f} chunks/s {tokens / alone:8.0f} tokens/s"
                  f" | ingestion end to end ({docs} docs) {n / took:7.1f} chunks/s {tokens / took:8.0f} tokens/s"
                  f" | {100 * ratio:5.1f} % of the embedder")  # fmt: skip
        print(f"ingestion / embedder: median {100 * statistics.median(ratios):.1f} % (target >= 85 %)")


if __name__ == "__main__":
    main()
