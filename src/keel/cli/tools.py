"""`keel tools add|list|show|remove|import-openapi` and `keel tools secrets set|list|remove|rotate`: a tenant's tools and
secrets in the configured store. A tool is a YAML (or JSON) file holding its spec (name, kind, description,
parameters, http|code|mcp, secrets, policy, timeout_s, max_output, limits: {rpm, calls_day, usd_day, usd_per_call}). A secret's value is
read from stdin or --value-env, never from the command line, and never printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from keel.cli.context import store
from keel.cli.output import Failure, emit_json, table, when


def register(p: argparse.ArgumentParser) -> None:
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    add = verbs.add_parser("add", help="register (or replace) a tool from a YAML/JSON spec file")
    add.add_argument("file")
    add.add_argument("--tenant", required=True)
    add.add_argument("--json", action="store_true")
    add.set_defaults(run=run_add)
    ls = verbs.add_parser("list", help="list a tenant's tools")
    ls.add_argument("--tenant")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(run=run_list)
    show = verbs.add_parser("show", help="show a tool's spec")
    show.add_argument("name")
    show.add_argument("--tenant", required=True)
    show.set_defaults(run=run_show)
    rm = verbs.add_parser("remove", help="remove a tool")
    rm.add_argument("name")
    rm.add_argument("--tenant", required=True)
    rm.set_defaults(run=run_remove)
    imp = verbs.add_parser("import-openapi", help="register an http tool per operation of an OpenAPI 3 document")
    imp.add_argument("tenant")
    imp.add_argument("file", help="the document, JSON or YAML")
    imp.add_argument("--only", help="operationIds to import, comma-separated (default: all)")
    imp.add_argument("--base-url", help="the API's URL (default: the document's servers[0].url)")
    imp.add_argument("--writes", choices=("approve", "allow", "deny"), default="approve",
                     help="the policy of operations other than GET (default: approve)")  # fmt: skip
    imp.add_argument("--json", action="store_true")
    imp.set_defaults(run=run_import)
    secrets = verbs.add_parser("secrets", help="a tenant's secrets (values go in once and never come out)")
    sv = secrets.add_subparsers(dest="secret_verb", metavar="VERB", required=True)
    put = sv.add_parser("set", help="set a secret; its value from stdin, or --value-env VAR")
    put.add_argument("name")
    put.add_argument("--tenant", required=True)
    put.add_argument("--value-env", help="read the value from this environment variable")
    put.set_defaults(run=run_secret_set)
    sl = sv.add_parser("list", help="names, key ids and times; never values")
    sl.add_argument("--tenant")
    sl.add_argument("--json", action="store_true")
    sl.set_defaults(run=run_secret_list)
    sr = sv.add_parser("remove")
    sr.add_argument("name")
    sr.add_argument("--tenant", required=True)
    sr.set_defaults(run=run_secret_remove)
    rot = sv.add_parser("rotate", help="re-seal every secret under KEEL_MASTER_KEY; old keys in KEEL_OLD_MASTER_KEYS")
    rot.set_defaults(run=run_secret_rotate)


def run_add(args: argparse.Namespace) -> int:
    import yaml

    from keel.agents.tools import SpecError, parse_spec
    from keel.audit.log import AuditLog
    from keel.store.protocols.agents import ToolRow

    try:
        data = yaml.safe_load(Path(args.file).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise Failure(f"{args.file}: {exc}") from None
    try:
        spec = parse_spec(data)
    except SpecError as err:
        raise Failure(f"{args.file}: {err.message}") from None
    stored = spec.model_dump(mode="json", exclude={"name"})
    with store(args) as s:
        before = s.get_tool(args.tenant, spec.name)
        row = ToolRow(args.tenant, spec.name, stored, time.time())
        s.put_tool(row)
        AuditLog(s).append("cli", "tool.register", spec.name, tenant=args.tenant,
                           before=before.spec if before else None, after=stored)  # fmt: skip
    if args.json:
        emit_json({"tenant": args.tenant, "name": spec.name, **stored})
    else:
        print(f"{'replaced' if before else 'added'} tool {spec.name} ({spec.kind}) for {args.tenant}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    import yaml

    from keel.agents.openapi import OpenApiError, tools_from_openapi
    from keel.agents.tools import SpecError, parse_spec
    from keel.audit.log import AuditLog
    from keel.store.protocols.agents import ToolRow

    try:
        doc = yaml.safe_load(Path(args.file).read_text())  # JSON is YAML
        only = [x.strip() for x in args.only.split(",") if x.strip()] if args.only else None
        specs = [parse_spec(d) for d in tools_from_openapi(doc, base_url=args.base_url, only=only, writes=args.writes)]
    except (OSError, yaml.YAMLError, OpenApiError) as exc:
        raise Failure(f"{args.file}: {exc}") from None
    except SpecError as err:
        raise Failure(f"{args.file}: {err.message}") from None
    with store(args) as s:
        for spec in specs:
            stored = spec.model_dump(mode="json", exclude={"name"})
            before = s.get_tool(args.tenant, spec.name)
            s.put_tool(ToolRow(args.tenant, spec.name, stored, time.time()))
            AuditLog(s).append("cli", "tool.register", spec.name, tenant=args.tenant,
                               before=before.spec if before else None, after=stored)  # fmt: skip
    if args.json:
        emit_json(
            [{"tenant": args.tenant, "name": x.name, **x.model_dump(mode="json", exclude={"name"})} for x in specs]
        )
    else:
        for x in specs:
            assert x.http is not None
            print(f"imported {x.name}: {x.http.method} {x.http.url} (policy {x.policy.default})")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from keel.agents.views import tool_view

    with store(args) as s:
        rows = s.list_tools(args.tenant)
    if args.json:
        emit_json([tool_view(r) for r in rows])
        return 0
    out = [(r.tenant, r.name, r.spec.get("kind"), (r.spec.get("policy") or {}).get("default"), when(r.updated_at),
            str(r.spec.get("description", ""))[:50]) for r in rows]  # fmt: skip
    table(("tenant", "name", "kind", "policy", "updated", "description"), out)
    return 0


def run_show(args: argparse.Namespace) -> int:
    from keel.agents.views import tool_view

    with store(args) as s:
        row = s.get_tool(args.tenant, args.name)
    if row is None:
        raise Failure(f"no tool '{args.name}' for tenant '{args.tenant}'")
    emit_json(tool_view(row))
    return 0


def run_remove(args: argparse.Namespace) -> int:
    from keel.audit.log import AuditLog

    with store(args) as s:
        before = s.get_tool(args.tenant, args.name)
        if before is None or not s.delete_tool(args.tenant, args.name):
            raise Failure(f"no tool '{args.name}' for tenant '{args.tenant}'")
        AuditLog(s).append("cli", "tool.remove", args.name, tenant=args.tenant, before=before.spec)
    print(f"removed tool {args.name}")
    return 0


def _vault(s: Any) -> Any:
    from keel.agents.secrets import MasterKey, SecretError, Vault
    from keel.audit.log import AuditLog

    try:
        key = MasterKey.from_env()
    except SecretError as exc:
        raise Failure(str(exc)) from None
    return Vault(s, key, AuditLog(s))


def run_secret_set(args: argparse.Namespace) -> int:
    from keel.agents.secrets import SecretError

    value = os.environ.get(args.value_env, "") if args.value_env else sys.stdin.read().rstrip("\n")
    with store(args) as s:
        try:
            _vault(s).put(args.tenant, args.name, value, actor="cli")
        except SecretError as exc:
            raise Failure(str(exc)) from None
    print(f"set secret {args.name} for {args.tenant}")
    return 0


def run_secret_list(args: argparse.Namespace) -> int:
    from keel.agents.views import secret_view

    with store(args) as s:
        rows = s.list_secrets(args.tenant)
    if args.json:
        emit_json([secret_view(r) for r in rows])
        return 0
    table(("tenant", "name", "key", "set"), [(r.tenant, r.name, r.key_id, when(r.created_at)) for r in rows])
    return 0


def run_secret_remove(args: argparse.Namespace) -> int:
    with store(args) as s:
        if not _vault(s).delete(args.tenant, args.name, actor="cli"):
            raise Failure(f"no secret '{args.name}' for tenant '{args.tenant}'")
    print(f"removed secret {args.name}")
    return 0


def run_secret_rotate(args: argparse.Namespace) -> int:
    from keel.agents.secrets import MasterKey, SecretError

    try:
        old = [MasterKey.parse(k) for k in os.environ.get("KEEL_OLD_MASTER_KEYS", "").split(",") if k.strip()]
        with store(args) as s:
            moved = _vault(s).rotate(old, actor="cli")
    except SecretError as exc:
        raise Failure(str(exc)) from None
    print(f"re-sealed {moved} secrets")
    return 0
