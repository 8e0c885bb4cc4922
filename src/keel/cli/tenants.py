"""`keel tenants create|list|update|purge`. A tenant may be restricted to provider regions (data residency).

`purge` deletes a tenant's data, or one user's within it, from the configured stores (see
keel/retention.py); caches held in a gateway's memory are reached only through its admin API.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import asdict

from keel.cli.audited import record
from keel.cli.context import load_config, store
from keel.cli.output import Failure, emit_json, table, when
from keel.config import Config
from keel.store.open import open_cache, open_vectors
from keel.store.protocols import BlobStore, CacheStore, Store, VectorIndex
from keel.traces.retention import PurgeReport, purge


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
    rm = verbs.add_parser("purge", help="delete a tenant's data, or one user's: traces, blobs, cache entries, rollups")
    rm.add_argument("name")
    rm.add_argument("--user", help="only this user's data within the tenant")
    rm.add_argument("--revoke-keys", action="store_true", help="first revoke its keys (with --user: the user's keys)")
    rm.add_argument(
        "--delete-tenant", action="store_true", help="also delete its keys, limit overrides and the tenant itself"
    )
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
    if not args.yes:
        if not sys.stdin.isatty():
            raise Failure(f"this deletes every trace, blob and cache entry of {whose}: add --yes to go ahead")
        if input(f"Delete all data of {whose}? Type the tenant name to confirm: ").strip() != args.name:
            raise Failure("not confirmed; nothing deleted")
    cfg = load_config(args)
    with store(args) as s:
        report = asyncio.run(_purge(cfg, s, args))
    if args.json:
        emit_json(asdict(report))
        return 0
    print(f"purged {whose}:")
    for kind, n in _counts(report):
        print(f"  {kind:<16} {n}")
    for note in report.notes:
        print(f"  note: {note}")
    return 0


async def _purge(cfg: Config, s: Store, args: argparse.Namespace) -> PurgeReport:
    """Open the caches the gateway uses (memory ones cannot be reached from here), then purge."""
    from keel.cache.builder import cache_urls  # the capabilities' imports only for this verb
    from keel.traces.builder import blobs_from

    url, vectors_url = cache_urls(cfg)
    notes = []
    cache: CacheStore | None = None
    vectors: VectorIndex | None = None
    for kind, where in (("cache", url), ("vector index", vectors_url)):
        if where == "memory://":
            notes.append(
                f"the {kind} lives in the gateway's memory: purge it there with"
                f" POST /api/tenants/{args.name}/purge (or restart the gateway)"
            )
    if url is not None and url != "memory://":
        cache = open_cache(url, max_entries=cfg.cache.max_entries)
    if vectors_url is not None and vectors_url != "memory://":
        vectors = open_vectors(vectors_url, max_entries=cfg.cache.max_entries)
    blobs = blobs_from(cfg)
    try:
        report = await purge(
            s,
            blobs,
            cache,
            vectors,
            args.name,
            args.user,
            revoke_keys=args.revoke_keys,
            delete_tenant=args.delete_tenant,
            revocation_wait_s=2 * cfg.server.revocation_poll_s,
            batch_size=cfg.retention.batch_size,
        )
        if args.user is None:  # a whole tenant: its RAG collections, documents, index and blobs too
            notes.append(await _purge_rag(cfg, s, blobs, args.name))
    finally:
        for c in (cache, vectors):
            if c is not None:
                await c.aclose()
        blobs.close()
    report.notes.extend(notes)
    return report


async def _purge_rag(cfg: Config, s: Store, blobs: BlobStore, tenant: str) -> str:
    from keel.rag.documents import Library
    from keel.rag.index import Index
    from keel.rag.ingest import Ingestor

    index = Index(s)
    try:
        gone = await Ingestor(Library(s, blobs, cfg.jobs), index).purge_tenant(tenant)
    finally:
        await index.aclose()
    return "rag: " + ", ".join(f"{kind} {n}" for kind, n in gone.items())


def _counts(r: PurgeReport) -> list[tuple[str, object]]:
    rows: list[tuple[str, object]] = [("traces", r.traces), ("payload blobs", r.blobs)]
    rows += [("cache entries", "-" if r.cache_entries is None else r.cache_entries)]
    rows += [("cache vectors", "-" if r.vectors is None else r.vectors), ("rollup rows", r.rollups)]
    rows.append(("stored responses", r.responses))
    if r.keys_revoked:
        rows.append(("keys revoked", r.keys_revoked))
    if r.tenant_deleted or r.keys_deleted:
        rows += [("keys deleted", r.keys_deleted), ("limit overrides", r.limit_overrides)]
        rows.append(("tenant deleted", "yes" if r.tenant_deleted else "no (none existed)"))
    return rows
