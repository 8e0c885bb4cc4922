"""What turns a last user turn into a vector for the semantic cache: the local model or an alias.

`LocalTextEmbedder` runs all-MiniLM-L6-v2 in this process (keel/embedding/model.py: ONNX Runtime on one
intra-op thread, or numpy) in a worker thread of its own (not the loop's default executor, where
background store calls may hang during a database outage), batching the texts that arrive while one
batch runs; `embed_texts` hands it a whole list (RAG: a query's chunks, an ingestion block), run in the
same worker so it takes turns with the cache's lookups instead of competing for the cores. `AliasTextEmbedder` asks the first
target of an embeddings alias behind the gateway (any provider with `/v1/embeddings`). Both name
their model and version in `model_id`, which the vector index keys on, so a model change starts a
fresh set of vectors instead of mixing them.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from keel.providers.base import Provider
from keel.types import EmbeddingRequest, Target

if TYPE_CHECKING:
    from keel.embedding.model import Floats, LocalEmbedder


class LocalTextEmbedder:
    def __init__(self, model: LocalEmbedder) -> None:
        self._model = model
        self.model_id = model.model_id
        self._queue: list[tuple[str, asyncio.Future[Sequence[float]]]] = []
        self._worker: asyncio.Task[None] | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="keel-embedder")

    async def embed(self, text: str) -> Sequence[float]:
        done: asyncio.Future[Sequence[float]] = asyncio.get_running_loop().create_future()
        self._queue.append((text, done))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.ensure_future(self._run())
        return await done

    async def embed_texts(self, texts: Sequence[str]) -> Floats:
        """Unit float32 rows, one per text, in order: `LocalEmbedder.embed` in this embedder's worker thread."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._model.embed, list(texts))

    async def _run(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:64], self._queue[64:]
            try:
                texts = [text for text, _ in batch]
                rows = await asyncio.get_running_loop().run_in_executor(self._thread, self._model.embed, texts)
            except Exception as exc:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for (_, done), row in zip(batch, rows, strict=True):
                if not done.done():
                    done.set_result(row.tolist())


class AliasTextEmbedder:
    def __init__(self, provider: Provider, target: Target) -> None:
        self._provider = provider
        self._target = target
        self.model_id = target.key

    async def embed(self, text: str) -> Sequence[float]:
        response = await self._provider.embed(EmbeddingRequest(self._target.model, (text,)), self._target)
        vector = response.vectors[0]
        norm = math.sqrt(sum(x * x for x in vector)) or 1.0
        return [x / norm for x in vector]
