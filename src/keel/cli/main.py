"""`keel` entry point. Exit codes: 0 ok, 1 failure, 2 usage or config error.

Start-up stays light: a noun's module (and what it imports) loads only when the command line names that
noun, so `keel --help` imports none of them, and a command's heavy imports (the runtime, the HTTP stack)
happen inside the function that runs it. argparse selects a sub-command only by its exact name, so a noun
absent from the command line can never be the one that runs: its stand-in parser only lists it in --help.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NamedTuple


class Noun(NamedTuple):  # not a dataclass: `dataclasses` (and its `inspect`) would cost --help ~10 ms
    name: str
    help: str
    module: str  # in keel.cli; its `register(parser)` adds the noun's verbs and options
    register: str = "register"


NOUNS = (
    Noun("serve", "run the gateway", "serve"),
    Noun("worker", "run job workers alone, no HTTP listener", "worker"),
    Noun("config", "check the config file", "config_cmd"),
    Noun("init", "write a commented starter keel.yaml", "config_cmd", "register_init"),
    Noun("db", "database maintenance", "db"),
    Noun("tenants", "manage tenants", "tenants"),
    Noun("keys", "manage virtual keys", "keys"),
    Noun("users", "people of a tenant and their roles; operators; purge one user's data", "users"),
    Noun("teams", "a tenant's teams", "teams"),
    Noun("tokens", "personal access tokens for the admin API", "tokens"),
    Noun("limits", "per-tenant and per-key limits, and usage against them", "limits"),
    Noun("traces", "inspect call traces", "traces"),
    Noun("jobs", "inspect, cancel and retry background jobs", "jobs"),
    Noun("prompts", "push, list, show, diff and label versioned prompts", "prompts"),
    Noun("rag", "RAG: ingest folders, list documents, search, re-index, evaluate retrieval", "rag"),
    Noun("slo", "per-alias SLOs: objectives, error budget left, burn rates", "slo"),
    Noun("drift", "compare a feature's or alias's recent traffic with a reference window", "drift"),
    Noun("eval", "run eval suites on the gateway and gate them against a baseline (CI)", "evals"),
    Noun("datasets", "eval datasets: import, add (from traces too), export, list", "datasets"),
    Noun("audit", "verify and export the hash-chained audit log", "audit"),
    Noun("tools", "a tenant's agent tools and secrets", "tools"),
    Noun("agents", "named agents: a model, tools, a step limit, a system prompt and roles", "agents"),
    Noun("approvals", "approve or deny agents' pending tool calls", "approvals"),
    Noun("runs", "agent runs and their step trees", "runs"),
    Noun("usage", "usage and cost over a time window, grouped by a dimension", "usage"),
    Noun("cache", "semantic cache tuning: calibrate the threshold on labelled pairs", "cache"),
    Noun(
        "loadtest",
        "replay a traffic profile at 1x-10x against simulated providers; name the first bottleneck",
        "loadtest",
    ),
    Noun("openapi", "print the admin API's OpenAPI document (JSON)", "openapi"),
    Noun("targets", "breaker state, latency and error rate per target (asks the running gateway)", "targets"),
)


def parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The command line's parser; only the nouns named in `argv` get their full parser (None: every noun)."""
    p = argparse.ArgumentParser(prog="keel", description="Keel: an open, self-hosted AI gateway.")
    p.add_argument("--config", "-c", help="path to keel.yaml (default: $KEEL_CONFIG or ./keel.yaml)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    named = None if argv is None else set(argv)
    for noun in NOUNS:
        noun_parser = sub.add_parser(noun.name, help=noun.help)
        if named is None or noun.name in named:
            getattr(importlib.import_module(f"keel.cli.{noun.module}"), noun.register)(noun_parser)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser(argv).parse_args(argv)  # --help and usage errors exit here, before the imports below
    from keel.cli.output import Failure
    from keel.errors import ConfigError

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
