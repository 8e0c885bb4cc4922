"""The embedding models an index can be built with, named by `IndexSpec.model`.

- `local` (or `all-MiniLM-L6-v2`): the bundled MiniLM in this process (keel.embedding.model), batched;
- `hash:<dim>`: feature hashing of words, signed, normalised: no model to install, lexical only; for
  tests and tiny deployments, and a second model to re-index to;
- `alias:<name>`: an embeddings alias of the gateway (its first target's provider).

Each resolves to an `IndexModel` whose `model_id` names the weights' version (MiniLM: the sha256 of its
weights; an alias: provider/model), which the build records: vectors of two versions never meet.
Embedding is blocking work: it runs in the model's own thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from keel.embedding.model import LocalEmbedder
    from keel.providers.base import Provider
    from keel.types import Target

    Floats = npt.NDArray[np.float32]

BATCH = 64  # texts per embedding call: progress is reported per batch
_WORD = re.compile(r"[^\W_]+")


class UnknownModel(ValueError):
    """`IndexSpec.model` names no model this runtime has; the message lists what it accepts."""


class IndexModel(Protocol):
    model_id: str

    async def embed(self, texts: Sequence[str]) -> Floats:
        """Unit-length float32 rows, one per text, in order."""
        ...


async def embed_rows(
    model: IndexModel, texts: Sequence[str], progress: Callable[[int], None] | None = None
) -> list[bytes]:
    """Each text's vector as float32 bytes, embedded `BATCH` texts a call (`progress`: texts done, after
    each call)."""
    blobs: list[bytes] = []
    for i in range(0, len(texts), BATCH):
        blobs.extend(row.tobytes() for row in await model.embed(texts[i : i + BATCH]))
        if progress is not None:
            progress(len(blobs))
    return blobs


class LocalModel:
    def __init__(self, model: LocalEmbedder) -> None:
        self._model = model
        self.model_id = model.model_id
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="keel-rag-embed")

    async def embed(self, texts: Sequence[str]) -> Floats:
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._model.embed, list(texts))


class HashModel:
    """Words hashed into `dim` signed buckets (sublinear counts), normalised: a bag-of-words vector."""

    def __init__(self, dim: int) -> None:
        if not 8 <= dim <= 4096:
            raise UnknownModel(f"hash:{dim}: the dimension must be within 8..4096")
        self.dim = dim
        self.model_id = f"hash-{dim}@1"

    async def embed(self, texts: Sequence[str]) -> Floats:
        import numpy as np

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
                out[row, h % self.dim] += 1.0 if (h >> 32) & 1 else -1.0
        out = np.sign(out) * np.log1p(np.abs(out))
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        result: Floats = (out / np.maximum(norms, 1e-12)).astype(np.float32)
        return result


class AliasModel:
    def __init__(self, provider: Provider, target: Target) -> None:
        self._provider = provider
        self._target = target
        self.model_id = f"alias:{target.key}"

    async def embed(self, texts: Sequence[str]) -> Floats:
        import numpy as np

        from keel.types import EmbeddingRequest

        if not texts:
            return np.zeros((0, 1), dtype=np.float32)
        response = await self._provider.embed(EmbeddingRequest(self._target.model, tuple(texts)), self._target)
        rows = np.asarray(response.vectors, dtype=np.float32)
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        result: Floats = rows / np.maximum(norms, 1e-12)
        return result


AliasResolver = Callable[[str], "tuple[Provider, Target] | None"]


class Models:
    """Resolves `IndexSpec.model` names to models, each built once per runtime."""

    def __init__(self, aliases: AliasResolver | None = None) -> None:
        self._aliases = aliases
        self._made: dict[str, IndexModel] = {}
        self._lock = asyncio.Lock()

    def add(self, name: str, model: IndexModel) -> None:
        """Offer a model under `name` (an embedder's own, or precomputed vectors in a benchmark)."""
        self._made[name] = model

    async def get(self, name: str) -> IndexModel:
        found = self._made.get(name)
        if found is not None:
            return found
        async with self._lock:
            if name not in self._made:
                self._made[name] = await self._make(name)
        return self._made[name]

    async def _make(self, name: str) -> IndexModel:
        if name in ("local", "all-MiniLM-L6-v2"):
            from keel.embedding.model import LocalEmbedder, ModelNotInstalled

            try:
                return LocalModel(await asyncio.to_thread(LocalEmbedder))
            except ModelNotInstalled as exc:
                raise UnknownModel(str(exc)) from None
        if name.startswith("hash:") and name[5:].isdigit():
            return HashModel(int(name[5:]))
        if name.startswith("alias:") and self._aliases is not None:
            found = self._aliases(name[6:])
            if found is not None:
                return AliasModel(*found)
        raise UnknownModel(
            f"unknown embedding model {name!r}: use 'local' (all-MiniLM-L6-v2), 'hash:<dim>' or 'alias:<embeddings alias>'"
        )
