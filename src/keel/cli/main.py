"""`keel` entry point. Exit codes: 0 ok, 1 failure, 2 usage or config error."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from keel.cli import config_cmd, db, keys, limits, serve, targets, tenants, traces, usage
from keel.cli.output import Failure
from keel.errors import ConfigError

NOUNS = (serve, config_cmd, db, tenants, keys, limits, traces, usage, targets)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="keel", description="Keel: an open, self-hosted AI gateway.")
    p.add_argument("--config", "-c", help="path to keel.yaml (default: $KEEL_CONFIG or ./keel.yaml)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for noun in NOUNS:
        noun.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except ConfigError as err:
        print(err.message, file=sys.stderr)
        return 2
    except Failure as err:
        print(f"keel: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
