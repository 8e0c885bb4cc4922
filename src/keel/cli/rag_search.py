"""`keel rag search|reindex|eval|builds|groups`: the RAG index in the configured store.

`search` runs a query as a user and groups (or `--all`, the tenant's every document) and prints each
hit with its scores and why it was kept. `reindex` rebuilds a collection's index for another embedding
model in a shadow build with a progress bar, then swaps; if it fails the old index keeps serving (exit 1).
`eval` prints nDCG@10, Recall@10/100 and MRR@10 of hybrid search beside BM25-only and vector-only on
the same index; `--rerank ALIAS` adds a row of hybrid search reranked by that chat alias (keel.rag.rerank,
through a gateway runtime built from the config, as the tenant's rerank service principal), with how many
queries the reranker skipped. `groups` sets the groups a virtual key searches as (keel.rag.acl).
The verbs join the `rag` noun (`register_verbs`), whose ingestion verbs live in keel.cli.rag.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from keel.cli.context import store
from keel.cli.output import Failure, emit_json, table, when

if TYPE_CHECKING:
    from keel.rag.index import Index

T = TypeVar("T")


def register(p: argparse.ArgumentParser) -> None:
    """The `rag` noun with these verbs alone (until ingestion's keel.cli.rag adds them to its own)."""
    register_verbs(p.add_subparsers(dest="verb", metavar="VERB", required=True))


def register_verbs(verbs: Any) -> None:
    s = verbs.add_parser("search", help="hybrid search as a user and groups: hits, scores per stage, why kept")
    s.add_argument("collection")
    s.add_argument("query")
    _tenant(s)
    s.add_argument("--user")
    s.add_argument("--groups", default="", help="comma-separated")
    s.add_argument("--all", action="store_true", help="every document of the tenant, access lists aside")
    s.add_argument("--top-k", type=int, default=10)
    s.add_argument("--mode", choices=["hybrid", "lexical", "vector"], default="hybrid")
    s.add_argument("--filters", help='JSON, e.g. \'{"lang": "en", "year": {"$gte": 2020}}\'')
    s.add_argument("--json", action="store_true")
    s.set_defaults(run=run_search)
    r = verbs.add_parser("reindex", help="rebuild a collection's index for another embedding model, then swap")
    r.add_argument("collection")
    _tenant(r)
    r.add_argument("--model", required=True, help="local | hash:<dim> | alias:<embeddings alias>")
    r.set_defaults(run=run_reindex)
    e = verbs.add_parser("eval", help="nDCG@10, Recall@10/100, MRR@10: hybrid beside BM25-only and vector-only")
    e.add_argument("collection")
    _tenant(e)
    e.add_argument("--queries", required=True, type=Path, help="JSON lines: {_id, text}")
    e.add_argument("--qrels", required=True, type=Path, help="TSV: query-id, corpus-id, score")
    e.add_argument("--rerank", metavar="ALIAS", help="add a row reranked by this chat alias (through the gateway)")
    e.add_argument("--rerank-top-n", type=int, default=20, help="candidates graded per query (1-50)")
    e.add_argument("--rerank-weight", type=float, default=0.7, help="the grade's share of the final score (0-1)")
    e.add_argument("--rerank-timeout", type=float, default=30.0, help="seconds per grading call")
    e.add_argument("--json", action="store_true")
    e.set_defaults(run=run_eval)
    b = verbs.add_parser("builds", help="a collection's index builds: model, state, chunks")
    b.add_argument("collection")
    _tenant(b)
    b.add_argument("--json", action="store_true")
    b.set_defaults(run=run_builds)
    g = verbs.add_parser("groups", help="show or set the groups a virtual key searches as")
    g.add_argument("key_id")
    g.add_argument("--set", dest="groups", help="comma-separated; '' clears")
    g.set_defaults(run=run_groups)


def _tenant(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tenant", required=True)


def _with_index(args: argparse.Namespace, body: Callable[[Index], Awaitable[T]]) -> T:
    from keel.rag.index import Index, NoIndex
    from keel.rag.index_models import UnknownModel
    from keel.rag.search import BadSearch

    async def main(s: Any) -> T:
        index = Index(s)
        try:
            return await body(index)
        finally:
            await index.aclose()

    with store(args) as s:
        try:
            return asyncio.run(main(s))
        except (NoIndex, UnknownModel) as exc:
            raise Failure(str(exc)) from None
        except BadSearch as exc:
            raise Failure(f"{exc.param}: {exc}") from None


def run_search(args: argparse.Namespace) -> int:
    from keel.rag.search import BadSearch, SearchQuery, parse_filters

    try:
        filters = parse_filters(orjson.loads(args.filters) if args.filters else None)
    except orjson.JSONDecodeError as exc:
        raise Failure(f"--filters is not JSON: {exc}") from None
    except BadSearch as exc:
        raise Failure(f"--{exc.param}: {exc}") from None
    groups = tuple(g.strip() for g in args.groups.split(",") if g.strip())
    q = SearchQuery(args.tenant, args.collection, args.query, min(args.top_k, 100), args.user, groups, args.all,
                    filters, args.mode)  # fmt: skip
    result = _with_index(args, lambda index: index.search(q))
    if args.json:
        from keel.api.rag_search import result_json

        emit_json(result_json(args.collection, result))
        return 0
    print(f"build {result.build} ({result.model}), {result.fusion}, {result.ms.get('total', 0):.1f} ms")
    for n, h in enumerate(result.hits, 1):
        s = h.scores
        print(f"\n[{n}] {h.document_id} v{h.version} #{h.ordinal}  {h.title}")
        print(f"    fused {s['fused']:.4f}  lexical {_num(s['lexical'])}  vector {_num(s['vector'])}  — {h.why}")
        print("    " + h.text[:200].replace("\n", " "))
    return 0


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def run_reindex(args: argparse.Namespace) -> int:
    from keel.rag.index import ENDED_GRACE_S, IndexSpec
    from keel.rag.index_rebuild import reindex

    started = time.monotonic()

    def progress(done: int, total: int) -> None:
        width = 30
        filled = int(width * done / total) if total else width
        rate = done / max(time.monotonic() - started, 1e-9)
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} chunks, {rate:.0f}/s")
        sys.stderr.flush()

    async def body(index: Index) -> Any:
        active = await index.active(args.tenant, args.collection)
        if active is None:
            raise Failure(f"collection {args.collection!r} of tenant {args.tenant!r} has no index")
        chunking = orjson.loads(active.spec).get("chunking", {})
        dropped = await index.drop_ended(time.time() - ENDED_GRACE_S)  # as a gateway's worker would: with
        if dropped:  # none running, re-indexes from here would otherwise keep every old build
            sys.stderr.write(f"dropped {dropped} build(s) retired or failed over {ENDED_GRACE_S:.0f} s ago\n")
        return await reindex(index, args.tenant, args.collection, IndexSpec(args.model, chunking), progress=progress)

    try:
        done = _with_index(args, body)
    except Failure:
        raise
    except Exception as exc:
        sys.stderr.write("\n")
        raise Failure(f"re-index failed, the old index keeps serving: {type(exc).__name__}: {exc}") from None
    sys.stderr.write("\n")
    print(f"active build {done.build} ({done.model}): {done.chunks} chunks of {done.documents} documents"
          f" re-embedded; {done.previous} retired (dropped within two minutes by a running gateway, else by"
          " the next `keel rag reindex` a minute from now)")  # fmt: skip
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from keel.rag import evaluate

    try:
        queries = evaluate.read_queries(args.queries)
        qrels = evaluate.read_qrels(args.qrels)
    except (OSError, ValueError) as exc:
        raise Failure(str(exc)) from None
    names = {"hybrid": "hybrid", "lexical": "BM25 only", "vector": "vector only"}
    if args.rerank:
        scores, skipped = _reranked_eval(args, queries, qrels)
        names["rerank"] = f"hybrid + rerank {args.rerank}"
    else:
        scores, skipped = _with_index(args, lambda index: _eval_runs(index, None, args, queries, qrels)), None
    if args.json:
        emit_json({names[m]: _scores(s) for m, s in scores.items()} | ({"rerank_skipped": skipped} if skipped else {}))
        return 0
    rows = [[names[m], f"{s.ndcg10:.3f}", f"{s.recall10:.3f}", f"{s.recall100:.3f}", f"{s.mrr10:.3f}", s.queries]
            for m, s in scores.items()]  # fmt: skip
    table(["search", "nDCG@10", "Recall@10", "Recall@100", "MRR@10", "queries"], rows)
    if skipped:
        print("reranking skipped for " + ", ".join(f"{n} quer{'y' if n == 1 else 'ies'} ({why})"
                                                    for why, n in sorted(skipped.items())))  # fmt: skip
    return 0


async def _eval_runs(index: Index, rerank: Any, args: argparse.Namespace, queries: Any, qrels: Any) -> dict[str, Any]:
    """Scores per mode (and, with `rerank` = (Reranker, RerankSpec), of hybrid reranked)."""
    from keel.rag import evaluate
    from keel.rag.search import SearchQuery

    out = {}
    runs: dict[str, dict[str, list[str]]] = {"hybrid": {}, "lexical": {}, "vector": {}, "rerank": {}}
    for mode in ("hybrid", "lexical", "vector"):
        for qid, text in queries.items():
            q = SearchQuery(args.tenant, args.collection, text, 100, everything=True, mode=mode)
            result = await index.search(q)
            runs[mode][qid] = [h.document_id for h in result.hits]
            if mode == "hybrid" and rerank is not None:
                reranker, spec = rerank
                graded = await reranker.rerank(result, text, spec, 100, None, args.tenant)
                runs["rerank"][qid] = [h.document_id for h in graded.hits]
        out[mode] = evaluate.score(runs[mode], qrels)
    if rerank is not None:
        out["rerank"] = evaluate.score(runs["rerank"], qrels)
    return out


def _reranked_eval(args: argparse.Namespace, queries: Any, qrels: Any) -> tuple[dict[str, Any], dict[str, int]]:
    """The eval through a runtime built from the config (no HTTP listener): the reranker needs its gateway."""
    from keel.cli.context import load_config
    from keel.rag.index import Index, NoIndex
    from keel.rag.rerank import Reranker, parse_spec
    from keel.rag.search import BadSearch
    from keel.runtime.components import Runtime

    raw = {"model": args.rerank, "top_n": args.rerank_top_n, "weight": args.rerank_weight,
           "timeout_s": args.rerank_timeout}  # fmt: skip
    try:
        spec = parse_spec(raw, "rerank")
    except BadSearch as exc:
        raise Failure(f"--{exc.param.replace('.', '-').replace('_', '-')}: {exc}") from None

    async def go() -> tuple[dict[str, Any], dict[str, int]]:
        runtime = Runtime.build(load_config(args))
        try:
            reranker = runtime.get(Reranker)
            before = dict(reranker.outcomes)
            scores = await _eval_runs(runtime.get(Index), (reranker, spec), args, queries, qrels)
            skipped = {o: n - before.get(o, 0) for o, n in reranker.outcomes.items() if o != "applied"}
            return scores, {o: n for o, n in skipped.items() if n}
        except NoIndex as exc:
            raise Failure(str(exc)) from None
        finally:
            await runtime.aclose()

    return asyncio.run(go())


def _scores(s: Any) -> dict[str, Any]:
    return {
        "ndcg@10": s.ndcg10,
        "recall@10": s.recall10,
        "recall@100": s.recall100,
        "mrr@10": s.mrr10,
        "queries": s.queries,
    }


def run_builds(args: argparse.Namespace) -> int:
    async def body(index: Index) -> list[tuple[Any, int]]:
        builds = await index.builds(args.tenant, args.collection)
        return [(b, await index.run(index.store.rag_count, b.id)) for b in builds]

    rows = _with_index(args, body)
    if args.json:
        emit_json([{"id": b.id, "model": b.model, "state": b.state, "chunks": n, "created_at": b.created_at,
                    "dim": b.dim, "error": b.error} for b, n in rows])  # fmt: skip
        return 0
    table(["build", "model", "state", "chunks", "created", "error"],
          [[b.id, b.model, b.state, n, when(b.created_at), b.error or ""] for b, n in rows])  # fmt: skip
    return 0


def run_groups(args: argparse.Namespace) -> int:
    with store(args) as s:
        key = next((k for k in s.list_keys() if k.id == args.key_id), None)
        if key is None:
            raise Failure(f"no key {args.key_id!r} (see `keel keys list`)")
        if args.groups is not None:
            from keel.rag.acl import groups_from

            s.rag_set_key_groups(key.tenant, key.id, groups_from({"groups": args.groups}), time.time())
        print(",".join(s.rag_key_groups(key.id)) or "(no groups)")
    return 0
