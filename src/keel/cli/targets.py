"""`keel targets`: breaker state, health and readiness of every target, as the running gateway sees them.

`state` is the target's server's readiness when its provider declares `readiness` (ready, warming while
it loads, down), else `-`; a warming target is not failing, so its breaker stays closed.

Breakers and latency averages live in the gateway process (or Redis), so this asks the running
gateway's admin API rather than the database.
"""

from __future__ import annotations

import argparse

from keel.cli.output import emit_json, table
from keel.cli.remote import add_url, admin_get


def register(p: argparse.ArgumentParser) -> None:
    add_url(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    rows = admin_get(args, "/api/targets")["data"]
    if args.json:
        emit_json(rows)
        return 0
    table(
        ["target", "region", "state", "breaker", "latency_ms", "ttft_ms", "error_rate", "calls"],
        [
            (
                r["target"],
                r["region"],
                r.get("state") or "-",
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
