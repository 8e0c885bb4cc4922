"""`keel rag ingest|collections|documents|show` (and the index's verbs, keel.cli.rag_search): RAG
collections and documents in the configured store.

`keel rag ingest COLLECTION PATH… --tenant T` walks the paths (folders recursively, hidden entries
skipped), puts every file of a known kind as a document whose id is its path relative to the folder
given (a file given alone: its name), with a progress bar: unchanged files (same bytes) are skipped by
hash, changed ones become a new version. `--sync` also tombstones the collection's documents that came
from these folders and are gone from them. It then waits for the workers (`keel serve` or `keel worker`)
to index what changed, showing how many are indexed and failed, and exits 1 if any failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.cli.context import load_config, store
from keel.cli.output import Failure, emit_json, table, when

if TYPE_CHECKING:
    from keel.rag.documents import Library

WAIT_POLL_S = 0.5


def register(p: argparse.ArgumentParser) -> None:
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    ing = verbs.add_parser("ingest", help="put a folder's files into a collection (skip unchanged, --sync deletes)")
    ing.add_argument("collection")
    ing.add_argument("paths", nargs="+", metavar="PATH")
    ing.add_argument("--tenant", required=True)
    ing.add_argument("--sync", action="store_true", help="tombstone documents from these folders that are gone")
    ing.add_argument("--create", action="store_true", help="create the collection if it does not exist")
    ing.add_argument("--model", default=None, help="with --create: the embedding model (default: local)")
    ing.add_argument("--max-tokens", type=int, default=None, help="with --create: chunk size in tokens")
    ing.add_argument("--overlap", type=int, default=None, help="with --create: overlap between chunks in tokens")
    ing.add_argument("--no-wait", action="store_true", help="do not wait for the documents to be indexed")
    ing.add_argument("--wait-s", type=float, default=3600.0, help="wait at most this long (default 3600)")
    ing.add_argument("--json", action="store_true")
    ing.set_defaults(run=run_ingest)
    cols = verbs.add_parser("collections", help="list collections")
    cols.add_argument("--tenant")
    cols.add_argument("--json", action="store_true")
    cols.set_defaults(run=run_collections)
    docs = verbs.add_parser("documents", help="list a collection's documents with their status")
    docs.add_argument("collection")
    docs.add_argument("--tenant", required=True)
    docs.add_argument("--status")
    docs.add_argument("--limit", type=int, default=1000)
    docs.add_argument("--json", action="store_true")
    docs.set_defaults(run=run_documents)
    show = verbs.add_parser("show", help="one document in full (status, stage and reason when failed)")
    show.add_argument("collection")
    show.add_argument("id")
    show.add_argument("--tenant", required=True)
    show.add_argument("--json", action="store_true")
    show.set_defaults(run=run_show)
    from keel.cli import rag_search  # the index's verbs: search, reindex, eval, builds, groups

    rag_search.register_verbs(verbs)


def walk(paths: list[str]) -> Iterator[tuple[str, Path, Path]]:
    """(document id, file, root folder) of every non-hidden file under `paths`, sorted within each."""
    for given in paths:
        path = Path(given)
        if path.is_file():
            yield path.name, path.resolve(), path.resolve().parent
            continue
        if not path.is_dir():
            raise Failure(f"{given}: no such file or folder")
        root = path.resolve()
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if not name.startswith("."):
                    file = Path(folder) / name
                    yield file.relative_to(root).as_posix(), file, root


class Bar:
    """A one-line progress bar on stderr when it is a terminal; else nothing until the summary."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total, self.live = label, total, sys.stderr.isatty()

    def show(self, done: int, note: str = "") -> None:
        if not self.live:
            return
        width = 30
        filled = width * done // max(1, self.total)
        sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} {note}\x1b[K")
        sys.stderr.flush()

    def end(self) -> None:
        if self.live:
            sys.stderr.write("\n")


def run_ingest(args: argparse.Namespace) -> int:
    from keel.rag.documents import Library
    from keel.traces.builder import blobs_from

    cfg = load_config(args)
    blobs = blobs_from(cfg)
    try:
        with store(args) as s:
            library = Library(s, blobs, cfg.jobs)
            _collection(library, args)
            report = _put_all(library, args)
            waited = {} if args.no_wait else _wait(library, args, report["queued"])
    finally:
        blobs.close()
    failed = waited.get("failed", [])
    summary = {k: (len(v) if isinstance(v, list) else v) for k, v in report.items() if k != "queued"}
    summary |= {"indexed": len(waited.get("indexed", [])), "failed": len(failed)}
    if args.json:
        emit_json({**summary, "failures": failed, "unknown_kind": report["unknown_kind"]})
    else:
        print("  ".join(f"{k} {v}" for k, v in summary.items()))
        for f in failed:
            print(f"failed: {f['id']} ({f['stage']}): {f['reason']}")
    return 1 if failed or waited.get("pending") else 0


def _collection(library: Library, args: argparse.Namespace) -> None:
    from keel.rag.collections import SpecError, collection_in

    if library.store.get_collection(args.tenant, args.collection) is not None:
        return
    if not args.create:
        raise Failure(f"no collection '{args.collection}' in tenant '{args.tenant}': add --create to make it")
    chunking = {k: v for k, v in (("max_tokens", args.max_tokens), ("overlap", args.overlap)) if v is not None}
    body: dict[str, Any] = {"name": args.collection, "chunking": chunking or None}
    if args.model:
        body["model"] = args.model
    try:
        library.create_collection(args.tenant, collection_in(body))
    except SpecError as exc:
        raise Failure(str(exc)) from None


def _put_all(library: Library, args: argparse.Namespace) -> dict[str, Any]:
    from keel.errors import KeelError
    from keel.rag.documents import Fields
    from keel.rag.parse import kind_of

    files = list(walk(args.paths))
    report: dict[str, Any] = {"created": 0, "updated": 0, "unchanged": 0, "deleted": 0, "queued": [],
                              "unknown_kind": []}  # fmt: skip
    seen: set[str] = set()
    bar = Bar("put", len(files))
    for i, (doc_id, file, _) in enumerate(files, 1):
        seen.add(doc_id)
        if kind_of(file.name) is None:
            report["unknown_kind"].append(str(file))
            continue
        try:
            _, result = library.put(
                args.tenant, args.collection, doc_id, file.read_bytes(), Fields(source=str(file)), filename=file.name
            )
        except KeelError as err:
            raise Failure(f"{file}: {err.message}") from None
        report[result] += 1
        if result != "unchanged":
            report["queued"].append(doc_id)
        bar.show(i, doc_id[-40:])
    bar.end()
    if args.sync:
        roots = {str(root) for _, _, root in files} | {str(Path(p).resolve()) for p in args.paths if Path(p).is_dir()}
        for doc_id, (_, _, gone) in library.store.document_hashes(args.tenant, args.collection).items():
            if gone or doc_id in seen:
                continue
            gone_row = library.store.get_document(args.tenant, args.collection, doc_id)
            if gone_row is not None and any(gone_row.source.startswith(r.rstrip("/") + "/") for r in roots):
                library.delete(args.tenant, args.collection, doc_id)
                report["deleted"] += 1
    return report


def _wait(library: Library, args: argparse.Namespace, ids: list[str]) -> dict[str, list[Any]]:
    """Until every queued document is indexed or failed (or --wait-s passes)."""
    out: dict[str, list[Any]] = {"indexed": [], "failed": [], "pending": []}
    pending = set(ids)
    bar = Bar("index", len(ids))
    deadline = time.monotonic() + args.wait_s
    while pending and time.monotonic() < deadline:
        for doc_id in sorted(pending):
            row = library.store.get_document(args.tenant, args.collection, doc_id)
            if row is None or row.status in ("indexed", "failed", "deleted"):
                pending.discard(doc_id)
                if row is not None and row.status == "failed":
                    out["failed"].append({"id": doc_id, "stage": row.stage, "reason": row.error})
                elif row is not None and row.status == "indexed":
                    out["indexed"].append(doc_id)
        bar.show(len(ids) - len(pending), f"failed {len(out['failed'])}")
        if pending:
            time.sleep(WAIT_POLL_S)
    bar.end()
    out["pending"] = sorted(pending)
    if pending:
        print(f"keel: {len(pending)} document(s) not indexed within {args.wait_s:g} s; is a worker running"
              " (keel serve or keel worker)?", file=sys.stderr)  # fmt: skip
    return out


def run_collections(args: argparse.Namespace) -> int:
    from keel.rag.collections import collection_view

    with store(args) as s:
        views = [collection_view(c) for c in s.list_collections(args.tenant)]
    if args.json:
        emit_json(views)
        return 0
    table(["tenant", "name", "model", "chunking", "created"],
          [(v["tenant"], v["name"], v["model"], v["chunking"], when(v["created_at"])) for v in views])  # fmt: skip
    return 0


def run_documents(args: argparse.Namespace) -> int:
    from keel.rag.documents import document_view

    with store(args) as s:
        rows = s.list_documents(args.tenant, args.collection, status=args.status, limit=args.limit)
    views = [document_view(d) for d in rows]
    if args.json:
        emit_json(views)
        return 0
    table(["id", "version", "status", "chunks", "updated", "failed"],
          [(v["id"], v["version"], v["status"], v["chunks"], when(v["updated_at"]),
            f"{v['failed']['stage']}: {v['failed']['reason']}"[:80] if v["failed"] else None) for v in views])  # fmt: skip
    return 0


def run_show(args: argparse.Namespace) -> int:
    from keel.rag.documents import document_view

    with store(args) as s:
        row = s.get_document(args.tenant, args.collection, args.id)
        job = s.get_job(row.job_id) if row is not None and row.job_id else None
    if row is None:
        raise Failure(f"no document '{args.id}' in collection '{args.collection}'")
    view = document_view(row, job, load_config(args).jobs.stuck_after)
    if args.json:
        emit_json(view)
        return 0
    width = max(len(k) for k in view)
    for key, value in view.items():
        print(f"{key.ljust(width)}  {'-' if value is None else value}")
    return 0
