"""`keel slo`: each alias's objectives over its SLO window, the error budget left and the burn rates.

Reads the usage rollups in the configured database (as `keel usage` does), so it answers whether or not
the gateway is running. Exit code 0 while every budget has some left, 1 when one is spent.
"""

from __future__ import annotations

import argparse
import time

from keel.cli.context import load_config, store
from keel.cli.output import emit_json, table


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("--alias", help="only this alias")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from keel.alerts.slo import SPEEDS, label, slos_of, statuses, view

    cfg = load_config(args)
    slos = {a: s for a, s in slos_of(cfg.models).items() if args.alias in (None, a)}
    if not slos:
        print("No alias declares an slo: set models.<alias>.slo: {availability: 99.9, p95_ms: 3000}.")
        return 0
    with store(args) as s:
        found = statuses(slos, s, time.time())
    spent = any(o.budget_remaining <= 0 for st in found for o in st.objectives)
    if args.json:
        emit_json([view(st) for st in found])
        return 1 if spent else 0
    windows = [label(w) for w in sorted({x for sp in SPEEDS for x in (sp.short_s, sp.long_s)})]
    rows = [
        (
            st.alias,
            o.name,
            f"{o.target:.3%}",
            f"{o.good:.3%}",
            o.calls,
            f"{o.budget_remaining:.1%}",
            *("-" if o.burn[w] is None else f"{o.burn[w]:.2f}x" for w in windows),
        )
        for st in found
        for o in st.objectives
    ]
    table(("alias", "objective", "target", "measured", "calls", "budget left", *(f"burn {w}" for w in windows)), rows)
    return 1 if spent else 0
