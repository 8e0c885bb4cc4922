"""`keel users purge TENANT USER`: delete one user's data within a tenant from every store, print the receipt.

The same cascade as `keel tenants purge NAME --user USER` (keel/tenancy/deletion.py). `register(verbs)`
adds the verb to whichever `users` noun parser holds it; `register_noun` makes that parser on its own.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from keel.cli.context import load_config, store
from keel.cli.tenants import confirm, purge_with, show_receipt


def register_noun(p: argparse.ArgumentParser) -> None:
    register(p.add_subparsers(dest="verb", metavar="VERB", required=True))


def register(verbs: Any) -> None:
    rm = verbs.add_parser("purge", help="delete one user's data within a tenant from every store; prints the receipt")
    rm.add_argument("tenant")
    rm.add_argument("user")
    rm.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    rm.add_argument("--json", action="store_true")
    rm.set_defaults(run=run_purge)


def run_purge(args: argparse.Namespace) -> int:
    whose = f"user '{args.user}' of tenant '{args.tenant}'"
    args.name = args.tenant  # what `confirm` asks to type
    confirm(args, whose)
    with store(args) as s:
        receipt = asyncio.run(purge_with(load_config(args), s, args.tenant, args.user))
    show_receipt(args, receipt, whose)
    return 0
