"""A re-index's copy done by another process: pages of the old build read, embedded and written into the
shadow there (decision 0067).

Copying 100,000 chunks is, in the serving process, ~1,600 pages of Python (rows read and converted,
chunk rows bound into inserts, a transaction per document) that takes the GIL in turns with the searches:
a search waits for it at each of its many hand-overs. So a re-index started with the store's URL runs
`python -m keel.rag.index_copy` (niced 10; the URL on its pipe, never in a process listing) and only
tells it which page to copy next. Where that process can build the new model itself (the same
`model_id`: `hash:<dim>`, `local`) it embeds too and the serving process does nothing per chunk; else
(an alias: the gateway's, here) it sends the page's texts back, this process embeds them and sends the
vectors. Messages are length-prefixed frames on its stdin/stdout: JSON, or raw float32 rows. A process
that does not answer within `PAGE_S` (stuck on a lock, a hung disk) is killed, and the re-index goes on
in the serving process from the same page.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import selectors
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from typing import IO, TYPE_CHECKING, Any, cast

import orjson

from keel.store.protocols.rag_index import ChunkRow

if TYPE_CHECKING:
    from keel.rag.index_models import IndexModel
    from keel.store.protocols.rag_index import RagIndexStore

SourceRow = tuple[int, int, str, ChunkRow]  # document row, its version, its title, the chunk
_HEAD = struct.Struct(">I")
STOP_S = 10.0
PAGE_S = 120.0  # the longest the copy process may take to answer (a page, or its start)


class CopyFailed(RuntimeError):
    """The copy process stopped (its stderr's last line, the URL redacted, is the message)."""


def by_document(rows: Sequence[SourceRow], blobs: Sequence[bytes]) -> dict[tuple[int, int], list[ChunkRow]]:
    """A page's chunks with their new vectors, grouped per (document, version) as `rag_copy` takes them."""
    out: dict[tuple[int, int], list[ChunkRow]] = {}
    for (doc, version, _, c), blob in zip(rows, blobs, strict=True):
        out.setdefault((doc, version), []).append(
            ChunkRow(c.ordinal, c.text, c.heading_path, c.content_hash, c.tokens, blob)
        )
    return out


def _send(out: IO[bytes], payload: bytes) -> None:
    out.write(_HEAD.pack(len(payload)) + payload)
    out.flush()


def _receive(read: Callable[[int], bytes]) -> bytes | None:
    """The next frame, `read(n)` giving up to n bytes (fewer: the end of the input); None at the end."""
    head = read(_HEAD.size)
    if len(head) < _HEAD.size:
        return None
    (size,) = _HEAD.unpack(head)
    payload = read(size)
    if len(payload) < size:
        return None
    return payload


class Copier:
    """The serving process's end of one copy process; its calls block (run them in the re-index thread)."""

    def __init__(self, url: str, source: str, shadow: str, model: str, model_id: str, docs: int) -> None:
        self._url = url
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close(), with the process)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "keel.rag.index_copy"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._stderr,
        )  # fmt: skip
        assert self._proc.stdout is not None
        self._out = self._proc.stdout.fileno()  # read with os.read: a buffered read could not stop at a deadline
        self._ready = selectors.DefaultSelector()
        self._ready.register(self._out, selectors.EVENT_READ)
        hello = {"url": url, "source": source, "shadow": shadow, "model": model, "model_id": model_id, "docs": docs}
        try:
            self.embeds = bool(self._ask(orjson.dumps(hello))["embeds"])
        except BaseException:
            self.close()
            raise

    def _ask(self, payload: bytes) -> dict[str, Any]:
        assert self._proc.stdin is not None
        deadline = time.monotonic() + PAGE_S
        try:
            _send(self._proc.stdin, payload)
            answer = _receive(lambda n: self._read(n, deadline))
        except TimeoutError:
            self._proc.kill()
            raise CopyFailed(f"the copy process timed out (no answer in {PAGE_S:g} s) and was stopped") from None
        except OSError:
            answer = None
        if answer is None:
            raise CopyFailed(self._why())
        return cast(dict[str, Any], orjson.loads(answer))

    def _read(self, n: int, deadline: float) -> bytes:
        """Up to `n` bytes of the process's answer (fewer: it ended); TimeoutError at `deadline`."""
        parts: list[bytes] = []
        while n:
            if not self._ready.select(deadline - time.monotonic()):
                raise TimeoutError
            part = os.read(self._out, n)
            if not part:
                break
            parts.append(part)
            n -= len(part)
        return b"".join(parts)

    def page(self, after: int) -> dict[str, Any]:
        """Copy the page of documents after `after`: {"rows": n, "last": doc}, or, where this process must
        embed, {"rows": n, "last": doc, "texts": [...]} (then `vectors`); {"rows": 0} at the end of the build."""
        return self._ask(orjson.dumps({"after": after}))

    def vectors(self, blob: bytes) -> dict[str, Any]:
        """The page's vectors, row after row; {} once the page is copied."""
        return self._ask(blob)

    def _why(self) -> str:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(STOP_S)
        self._stderr.seek(0)
        lines = self._stderr.read().decode(errors="replace").strip().splitlines()
        last = lines[-1] if lines else f"exit status {self._proc.returncode}"
        return last.replace(self._url, "<storage url>")[:500]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self._proc.stdin is not None:
                self._proc.stdin.close()  # end of input: it exits
        try:
            self._proc.wait(STOP_S)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._ready.close()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._stderr.close()


def copy_page(store: RagIndexStore, shadow: str, rows: Sequence[SourceRow], blobs: Sequence[bytes]) -> None:
    """A page's documents into the shadow, in one transaction (`rag_copy`): one commit a page, not one a
    document."""
    store.rag_copy(shadow, [(doc, version, chunks) for (doc, version), chunks in by_document(rows, blobs).items()])


async def own_model(name: str, model_id: str) -> IndexModel | None:
    """The new model, if this process can build the very same one."""
    from keel.rag.index_models import Models, UnknownModel

    try:
        model = await Models().get(name)
    except UnknownModel:
        return None
    return model if model.model_id == model_id else None


async def _serve(inp: IO[bytes], out: IO[bytes]) -> None:
    from keel.rag.index import embed_text
    from keel.rag.index_models import embed_rows
    from keel.store.open import open_store

    first = _receive(inp.read)
    if first is None:
        return
    hello = orjson.loads(first)
    store = open_store(hello["url"], migrate=False)
    try:
        model = await own_model(hello["model"], hello["model_id"])
        _send(out, orjson.dumps({"embeds": model is not None}))
        while (asked := _receive(inp.read)) is not None:
            rows = store.rag_source_chunks(hello["source"], orjson.loads(asked)["after"], hello["docs"])
            if not rows:
                _send(out, orjson.dumps({"rows": 0}))
                continue
            texts = [embed_text(title, c) for _, _, title, c in rows]
            page: dict[str, Any] = {"rows": len(rows), "last": rows[-1][0]}
            if model is None:
                _send(out, orjson.dumps({**page, "texts": texts}))
                blob = _receive(inp.read)
                if blob is None:
                    return
                width = len(blob) // len(rows)
                blobs = [blob[i * width : (i + 1) * width] for i in range(len(rows))]
            else:
                blobs = await embed_rows(model, texts)
            copy_page(store, hello["shadow"], rows, blobs)
            _send(out, orjson.dumps(page))
    finally:
        store.close()


def idle_priority() -> None:
    """This process runs only when nothing else wants a core (Linux SCHED_IDLE: a weight of 3 against a
    normal process's 1,024; nice 10 still took ~10 % of a shared core from the searches), else at nice 19."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # type: ignore[attr-defined,unused-ignore]
    except (AttributeError, OSError):
        with contextlib.suppress(OSError):
            os.nice(19)


def said_last(exc: BaseException) -> int:
    """The traceback, then the error in one line as stderr's last (what the serving process reports: a
    database error's own last lines are its context, e.g. "COPY rag_chunks, line 33"); exit status 1."""
    traceback.print_exception(exc)
    first = str(exc).strip().split("\n", 1)[0]
    print(f"{type(exc).__name__}: {first}" if first else type(exc).__name__, file=sys.stderr, flush=True)
    return 1


def main() -> int:
    idle_priority()  # the serving process's searches go first
    try:
        asyncio.run(_serve(sys.stdin.buffer, sys.stdout.buffer))
    except Exception as exc:
        return said_last(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
