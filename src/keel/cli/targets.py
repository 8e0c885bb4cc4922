"""`keel targets`: breaker state and health of every target, as the running gateway sees them.

Breakers and latency averages live in the gateway process (or Redis), so this asks the running
gateway's admin API rather than the database.
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request

from keel.cli.context import load_config
from keel.cli.output import Failure, emit_json, table


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("targets", help="breaker state, latency and error rate per target (asks the running gateway)")
    p.add_argument("--url", help="the gateway's base URL (default: from server.host/port in keel.yaml)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args)
    if not cfg.admin_token:
        raise Failure("the admin API is disabled: set admin_token in keel.yaml")
    base = args.url or f"http://{cfg.server.host}:{cfg.server.port}"
    req = urllib.request.Request(
        base.rstrip("/") + "/api/targets", headers={"authorization": f"Bearer {cfg.admin_token}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            rows = json.load(resp)["data"]
    except urllib.error.HTTPError as exc:
        raise Failure(f"the gateway at {base} answered HTTP {exc.code}; check admin_token") from None
    except (urllib.error.URLError, OSError) as exc:
        raise Failure(f"cannot reach the gateway at {base} ({exc}); is `keel serve` running? try --url") from None
    if args.json:
        emit_json(rows)
        return 0
    table(
        ["target", "region", "breaker", "latency_ms", "ttft_ms", "error_rate", "calls"],
        [
            (
                r["target"],
                r["region"],
                r["breaker"],
                _ms(r.get("latency_ms")),
                _ms(r.get("ttft_ms")),
                r.get("error_rate", 0),
                r.get("calls", 0),
            )
            for r in rows
        ],
    )
    return 0


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
