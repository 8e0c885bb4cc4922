"""`keel openapi`: print the admin API's OpenAPI 3.1 document, the one the gateway serves at
/api/openapi.json (no config or running gateway needed)."""

from __future__ import annotations

import argparse
import sys


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", "-o", help="write the document to this file instead of stdout")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import orjson

    from keel.api.openapi.document import document

    text = orjson.dumps(document(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0
