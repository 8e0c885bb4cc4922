"""`keel tenants create|list|update|purge`. A tenant may be restricted to provider regions (data residency).

`purge` deletes a tenant (or one user's data within it) from every configured store and prints the
receipt (keel/tenancy/deletion.py); caches held in a gateway's memory are reached only through its
admin API.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING

from keel.cli.audited import record
from keel.cli.context import load_config, store
from keel.cli.output import Failure, emit_json, table, when
from keel.config import Config
from keel.store.open import open_cache, open_vectors
from keel.store.protocols import CacheStore, Store, VectorIndex

if TYPE_CHECKING:
    from keel.tenancy.deletion import Receipt


def register(p: argparse.ArgumentParser) -> None:
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    create = verbs.add_parser("create", help="create a tenant")
    create.add_argument("name")
    create.add_argument("--regions", help="comma-separated provider regions its calls may use (default: any)")
    create.add_argument("--json", action="store_true")
    create.set_defaults(run=run_create)
    ls = verbs.add_parser("list", help="list tenants")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(run=run_list)
    update = verbs.add_parser("update", help="change a tenant's regions; applies everywhere within 1 s")
    update.add_argument("name")
    which = update.add_mutually_exclusive_group(required=True)
    which.add_argument("--regions", help="comma-separated provider regions its calls may use")
    which.add_argument("--any-region", action="store_true", help="lift the region restriction")
    update.add_argument("--json", action="store_true")
    update.set_defaults(run=run_update)
    rm = verbs.add_parser("purge", help="delete a tenant (or one user's data) from every store; prints the receipt")
    rm.add_argument("name")
    rm.add_argument("--user", help="only this user's data within the tenant")
    rm.add_argument("--revoke-keys", action="store_true", help=argparse.SUPPRESS)  # always now: kept for scripts
    rm.add_argument("--delete-tenant", action="store_true", help=argparse.SUPPRESS)  # likewise
    rm.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    rm.add_argument("--json", action="store_true")
    rm.set_defaults(run=run_purge)


def _regions(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    regions = tuple(r.strip() for r in text.split(",") if r.strip())
    if not regions:
        raise Failure("--regions names no region; to allow any region, leave it out (or use --any-region)")
    return regions


def _shown(regions: tuple[str, ...] | None) -> str:
    return "any" if regions is None else ",".join(regions)


def run_create(args: argparse.Namespace) -> int:
    regions = _regions(args.regions)
    with store(args) as s:
        row = s.create_tenant(args.name, regions)
        record(s, "tenant.create", row.name, tenant=row.name, after={"regions": row.regions})
    if args.json:
        emit_json(asdict(row))
    elif row.regions is None:
        print(f"created tenant {row.name}")
    else:
        print(f"created tenant {row.name}, restricted to regions {_shown(row.regions)}")
    return 0


def run_update(args: argparse.Namespace) -> int:
    regions = None if args.any_region else _regions(args.regions)
    with store(args) as s:
        row = s.set_tenant_regions(args.name, regions)
        if row is not None:
            record(s, "tenant.update", row.name, tenant=row.name, after={"regions": row.regions})
    if row is None:
        raise Failure(f"no tenant '{args.name}'; see `keel tenants list`")
    if args.json:
        emit_json(asdict(row))
    else:
        print(f"tenant {row.name} may use regions: {_shown(row.regions)}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    with store(args) as s:
        rows = s.list_tenants()
    if args.json:
        emit_json([asdict(r) for r in rows])
    else:
        table(["name", "regions", "created"], [(r.name, _shown(r.regions), when(r.created_at)) for r in rows])
    return 0


def run_purge(args: argparse.Namespace) -> int:
    if args.delete_tenant and args.user:
        raise Failure("--delete-tenant removes a whole tenant: leave out --user")
    whose = f"user '{args.user}' of tenant '{args.name}'" if args.user else f"tenant '{args.name}'"
    confirm(args, whose)
    with store(args) as s:
        receipt = asyncio.run(purge_with(load_config(args), s, args.name, args.user))
    show_receipt(args, receipt, whose)
    return 0


def confirm(args: argparse.Namespace, whose: str) -> None:
    if args.yes:
        return
    what = "everything Keel holds of" if args.user else "everything Keel holds of, and the tenant itself:"
    if not sys.stdin.isatty():
        raise Failure(f"this deletes {what} {whose}: add --yes to go ahead")
    if input(f"Delete {what} {whose}? Type the tenant name to confirm: ").strip() != args.name:
        raise Failure("not confirmed; nothing deleted")


def show_receipt(args: argparse.Namespace, receipt: Receipt, whose: str) -> None:
    if args.json:
        emit_json(receipt.json())
        return
    print(f"purged {whose} (audit entry {receipt.audit_seq}, receipt digest {receipt.digest}):")
    for kind, n in sorted(receipt.counts.items()):
        if n:
            print(f"  {kind:<18} {n}")
    if none := sorted(kind for kind, n in receipt.counts.items() if not n):
        print(f"  nothing held in: {', '.join(none)}")
    for note in receipt.notes:
        print(f"  note: {note}")


async def purge_with(cfg: Config, s: Store, tenant: str, user: str | None) -> Receipt:
    """Open the caches, blobs and RAG index the gateway uses (memory ones cannot be reached from here),
    then run the one purge cascade (keel.tenancy.deletion)."""
    from keel.cache.builder import cache_urls  # the capabilities' imports only for this verb
    from keel.rag.documents import Library
    from keel.rag.index import Index
    from keel.rag.ingest import Ingestor
    from keel.tenancy.deletion import Stores, purge
    from keel.traces.builder import blobs_from

    url, vectors_url = cache_urls(cfg)
    notes = []
    cache: CacheStore | None = None
    vectors: VectorIndex | None = None
    for kind, where in (("cache", url), ("vector index", vectors_url)):
        if where == "memory://":
            notes.append(
                f"the {kind} lives in the gateway's memory: purge it there with"
                f" POST /api/tenants/{tenant}/purge (or restart the gateway)"
            )
    if url is not None and url != "memory://":
        cache = open_cache(url, max_entries=cfg.cache.max_entries)
    if vectors_url is not None and vectors_url != "memory://":
        vectors = open_vectors(vectors_url, max_entries=cfg.cache.max_entries)
    blobs = blobs_from(cfg)
    index = Index(s)
    try:
        rag = Ingestor(Library(s, blobs, cfg.jobs), index)
        stores = Stores(
            s, blobs, cache, vectors, rag, cfg.retention.batch_size, revocation_wait_s=2 * cfg.server.revocation_poll_s
        )
        receipt = await purge(stores, tenant, user, actor="cli")
    finally:
        for c in (cache, vectors):
            if c is not None:
                await c.aclose()
        await index.aclose()
        blobs.close()
    receipt.notes.extend(notes)
    return receipt
