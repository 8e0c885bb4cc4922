"""A build's in-process index made in another process and handed over as arrays (decision 0060).

Loading a build of 100,000 chunks is seconds of Python (tokenizing some 6 M words) which, in the serving
process, takes the GIL in turns with the searches. A re-index therefore has its new build read and
indexed by `python -m keel.rag.index_export BUILD DIM FOLDER` (niced; it opens the store itself, its
URL read from stdin so that no password shows in a process listing),
which writes the vectors, the postings by term, the forward index and the vocabulary into FOLDER as
.npy files; the serving process only reads those arrays back (`load`): no Python per row or per term.
Rows written after the subprocess read the build are then loaded as usual (VectorCache.current).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from keel.rag.index_terms import BuildTerms, Postings, Tokens
from keel.rag.index_vectors import BuildVectors

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

TIMEOUT_S = 3600.0
_ARRAYS = ("matrix", "ids", "docs", "versions", "offsets", "rows", "tf", "lengths", "forward")


class ExportFailed(RuntimeError):
    """The subprocess could not load the build (its stderr's end is the message)."""


def build_elsewhere(url: str, build: str, dim: int) -> BuildVectors:
    """Run the subprocess on `build` of the store at `url` and read what it wrote: blocking (the
    re-index thread waits for it, holding no GIL meanwhile)."""
    with tempfile.TemporaryDirectory(prefix="keel-rag-export-") as folder:
        done = subprocess.run(
            [sys.executable, "-m", "keel.rag.index_export", build, str(dim), folder],
            input=url.encode(),
            capture_output=True,
            timeout=TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0:
            lines = done.stderr.decode(errors="replace").strip().splitlines() or [f"exit status {done.returncode}"]
            raise ExportFailed(lines[-1].replace(url, "<storage url>")[:500])
        return load(Path(folder))


def save(vectors: BuildVectors, folder: Path) -> None:
    import numpy as np

    if vectors.terms is None:
        raise ValueError("a build handed over needs its full text")
    n = vectors.n
    postings, lengths, forward = vectors.terms.export()
    arrays: dict[str, npt.NDArray[np.generic]] = {
        "matrix": vectors.matrix[:n], "ids": vectors.ids[:n], "docs": vectors.docs[:n],
        "versions": vectors.versions[:n], "offsets": postings.offsets, "rows": postings.rows, "tf": postings.tf,
        "lengths": lengths, "forward": forward,
    }  # fmt: skip
    for name, array in arrays.items():
        np.save(folder / f"{name}.npy", array, allow_pickle=False)
    (folder / "stems.txt").write_text("\n".join(vectors.terms.tokens.stems()), encoding="utf-8")
    (folder / "build.json").write_text(json.dumps({"dim": vectors.dim, "n": n}))


def load(folder: Path) -> BuildVectors:
    """The build `save` wrote, as this process's in-process index (its own term numbering)."""
    import numpy as np

    a = {name: np.load(folder / f"{name}.npy", allow_pickle=False) for name in _ARRAYS}
    text = (folder / "stems.txt").read_text(encoding="utf-8")
    tokens = Tokens.numbered(text.split("\n") if text else [])
    terms = BuildTerms.handed(tokens, Postings(a["offsets"], a["rows"], a["tf"]), a["lengths"], a["forward"])
    vectors = BuildVectors.handed(a["matrix"], a["ids"], a["docs"], a["versions"], terms)
    if vectors.dim != json.loads((folder / "build.json").read_text())["dim"]:
        raise ExportFailed("the exported vectors are not of the build's width")
    return vectors


def main(argv: list[str]) -> int:
    build, dim, folder = argv
    url = sys.stdin.read().strip()
    from keel.rag.index_copy import idle_priority, said_last

    idle_priority()  # the serving process's searches go first
    from keel.store.open import open_store

    try:
        store = open_store(url, migrate=False)
        try:
            vectors = BuildVectors(int(dim), Tokens())
            vectors.extend(store.rag_vectors(build, 0))
            save(vectors, Path(folder))
        finally:
            store.close()
    except Exception as exc:
        return said_last(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
