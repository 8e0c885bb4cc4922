"""`keel datasets import|add|export|list|show`: eval datasets in the configured store.

A dataset is a named series of immutable versions. `import` writes a file's items as a new version;
`add` writes a new version with the latest items plus new ones — from a file, or sampled from traces
(`--from-traces --feature support --since 7d --sample 200 --where status=ok`), each keeping its trace id.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from keel.cli.context import load_config, store
from keel.cli.output import Failure, emit_json, table, when

MAX_SCAN = 100_000  # traces read per --from-traces sampling


def register(p: argparse.ArgumentParser) -> None:
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    imp = verbs.add_parser("import", help="write a JSONL or CSV file's items as the dataset's next version")
    imp.add_argument("name")
    imp.add_argument("file")
    _tenant(imp)
    imp.set_defaults(run=run_import)
    add = verbs.add_parser("add", help="a new version: the latest items plus a file's or sampled traces'")
    add.add_argument("name")
    add.add_argument("file", nargs="?")
    add.add_argument("--from-traces", action="store_true")
    add.add_argument("--feature")
    add.add_argument("--alias")
    add.add_argument("--since", default="7d", help="unix seconds or a duration back from now (15m, 24h, 7d)")
    add.add_argument("--sample", type=int, default=200)
    add.add_argument("--seed", type=int)
    add.add_argument("--where", action="append", default=[], metavar="KEY=VALUE", help="a trace column or tag")
    _tenant(add)
    add.set_defaults(run=run_add)
    exp = verbs.add_parser("export", help="write a version as JSONL (default) or CSV")
    exp.add_argument("ref", metavar="NAME[@VERSION]")
    exp.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    exp.add_argument("--output", "-o")
    exp.add_argument("--tenant", required=True)
    exp.set_defaults(run=run_export)
    ls = verbs.add_parser("list", help="datasets and their versions")
    ls.add_argument("--tenant")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(run=run_list)


def _tenant(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tenant", required=True)
    p.add_argument("--note", help="what this version is")
    p.add_argument("--json", action="store_true")


def _read_file(path: str) -> list[Any]:
    from keel.evals.assertions import InvalidSuite
    from keel.evals.datasets import read_csv, read_jsonl

    try:
        text = Path(path).read_text()
        return read_csv(text, path) if path.endswith(".csv") else read_jsonl(text, path)
    except OSError as exc:
        raise Failure(f"{path}: {exc}") from None
    except InvalidSuite as err:
        raise Failure(str(err)) from None


def _done(args: argparse.Namespace, ds: Any) -> int:
    view = {"name": ds.name, "version": ds.version, "items": ds.count, "tenant": ds.tenant}
    if args.json:
        emit_json(view)
    else:
        print(f"{ds.name} v{ds.version}: {ds.count} items")
    return 0


def run_import(args: argparse.Namespace) -> int:
    items = _read_file(args.file)
    with store(args) as s:
        return _done(args, s.put_dataset(args.tenant, args.name, items, note=args.note, now=time.time()))


def run_add(args: argparse.Namespace) -> int:
    if bool(args.file) == bool(args.from_traces):
        raise Failure("give a FILE or --from-traces (not both)")
    with store(args) as s:
        latest = s.get_dataset(args.tenant, args.name)
        old = s.dataset_items(args.tenant, args.name, latest.version) if latest else []
        new = _read_file(args.file) if args.file else _from_traces(args, s)
        if not new:
            raise Failure("nothing to add: no matching item")
        ds = s.put_dataset(args.tenant, args.name, [*old, *new], note=args.note, now=time.time())
    print(f"added {len(new)} item(s)", file=sys.stderr)
    return _done(args, ds)


def _from_traces(args: argparse.Namespace, s: Any) -> list[Any]:
    from keel.evals.datasets import item_from_trace, matches, sample
    from keel.store.protocols import TraceQuery
    from keel.traces.builder import blobs_from
    from keel.traces.writer import parse_window, read_trace

    where = {}
    for w in args.where:
        key, eq, value = w.partition("=")
        if not eq or not key:
            raise Failure(f"--where {w!r}: use KEY=VALUE (a trace column such as status, or a tag)")
        where[key] = value
    since, until = parse_window(args.since, None, time.time())
    query = TraceQuery(
        since=since, until=until, tenant=args.tenant, feature=args.feature, alias=args.alias, limit=MAX_SCAN
    )
    rows = [r for r in s.list_traces(query) if r.endpoint == "chat" and matches(r, where)]
    blobs = blobs_from(load_config(args))
    items = []
    for row in sample(rows, max(0, args.sample), args.seed):
        full = read_trace(s, blobs, row.id)
        item = item_from_trace(full) if full is not None else None
        if item is not None:
            items.append(item)
    return items


def run_export(args: argparse.Namespace) -> int:
    from keel.evals.assertions import InvalidSuite
    from keel.evals.datasets import write_csv, write_jsonl

    name, _, version = args.ref.partition("@")
    with store(args) as s:
        ds = s.get_dataset(args.tenant, name, int(version) if version.isdigit() else None)
        if ds is None:
            raise Failure(f"no dataset {args.ref!r} in tenant {args.tenant!r}")
        items = s.dataset_items(args.tenant, name, ds.version)
    try:
        text = write_csv(items) if args.format == "csv" else write_jsonl(items)
    except InvalidSuite as err:
        raise Failure(str(err)) from None
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def run_list(args: argparse.Namespace) -> int:
    with store(args) as s:
        rows = s.list_datasets(args.tenant)
    if args.json:
        emit_json([{"tenant": d.tenant, "name": d.name, "version": d.version, "items": d.count,
                    "note": d.note, "created_at": d.created_at} for d in rows])  # fmt: skip
        return 0
    table(["tenant", "name", "version", "items", "note", "created"],
          [[d.tenant, d.name, d.version, d.count, d.note, when(d.created_at)] for d in rows])  # fmt: skip
    return 0
