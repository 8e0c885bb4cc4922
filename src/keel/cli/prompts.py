"""`keel prompts push|list|show|diff|label`: the prompt registry in the configured store.

Prompts live as YAML files in the product's repository (`name`, `messages`, optional `variables`,
`alias`, `params`, `tools`, `response_format`, `message`); `push` is idempotent (equal content is the
version it already is). The CLI is an operator with the store: it may move protected labels. A running
gateway serves what changed within its refresh period (2 s).
"""

from __future__ import annotations

import argparse
import difflib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.cli.context import store
from keel.cli.output import Failure, emit_json, table, when

if TYPE_CHECKING:
    from keel.audit.log import AuditLog
    from keel.store.protocols import Store


def register(p: argparse.ArgumentParser) -> None:
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    push = verbs.add_parser("push", help="store YAML prompt files as versions (idempotent)")
    push.add_argument("files", nargs="+", metavar="FILE")
    push.add_argument("--tenant", required=True)
    push.add_argument("--label", help="point this label at each pushed version")
    push.add_argument("--author")
    push.add_argument("--json", action="store_true")
    push.set_defaults(run=run_push)
    ls = verbs.add_parser("list", help="list prompts: latest version and labels")
    ls.add_argument("--tenant")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(run=run_list)
    show = verbs.add_parser("show", help="show a version: NAME, NAME@3 or NAME@production")
    show.add_argument("ref", metavar="NAME[@version|label]")
    show.add_argument("--tenant", required=True)
    show.add_argument("--json", action="store_true")
    show.set_defaults(run=run_show)
    diff = verbs.add_parser("diff", help="compare two versions (numbers, v-numbers or labels)")
    diff.add_argument("name")
    diff.add_argument("old")
    diff.add_argument("new")
    diff.add_argument("--tenant", required=True)
    diff.set_defaults(run=run_diff)
    label = verbs.add_parser("label", help="point a label at a version: label NAME production v4")
    label.add_argument("name")
    label.add_argument("label")
    label.add_argument("version")
    label.add_argument("--tenant", required=True)
    protect = label.add_mutually_exclusive_group()
    protect.add_argument("--protect", dest="protected", action="store_const", const=True)
    protect.add_argument("--unprotect", dest="protected", action="store_const", const=False)
    label.add_argument("--json", action="store_true")
    label.set_defaults(run=run_label)
    register_rollout(verbs)
    fb = verbs.add_parser("feedback", help="feedback scores per prompt version or model: count and mean")
    fb.add_argument("--by", default="prompt_version", choices=["prompt_version", "model"])
    fb.add_argument("--since", default="24h", help="unix seconds or a duration back from now (15m, 24h, 7d)")
    fb.add_argument("--until")
    fb.add_argument("--tenant")
    fb.add_argument("--json", action="store_true")
    fb.set_defaults(run=run_feedback)


def _docs(path: str) -> list[dict[str, Any]]:
    import yaml

    try:
        docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d is not None]
    except (OSError, yaml.YAMLError) as exc:
        raise Failure(f"{path}: {exc}") from None
    for d in docs:
        if not isinstance(d, dict):
            raise Failure(f"{path}: each YAML document must be a mapping (name, messages, ...)")
    return docs


def run_push(args: argparse.Namespace) -> int:
    from keel.prompts.registry import ContentError, Registry, version_view

    docs = [(path, d) for path in args.files for d in _docs(path)]
    out = []
    with store(args) as s:
        registry = Registry(s)
        for path, doc in docs:
            body = {**doc, **({"label": args.label} if args.label else {})}
            try:
                pushed = registry.push(args.tenant, body, author=args.author or "cli", admin=True)
            except ContentError as err:
                raise Failure(f"{path}: {err.field}: {err.message}") from None
            v = pushed.version
            out.append({**version_view(v), "created": pushed.created, "file": path})
            if not args.json:
                state = "new" if pushed.created else "unchanged"
                moved = f", {args.label} → v{v.version}" if args.label else ""
                print(f"{v.name} v{v.version} ({state}{moved})  {path}")
    if args.json:
        emit_json(out)
    return 0


def run_list(args: argparse.Namespace) -> int:
    from keel.prompts.registry import Registry

    with store(args) as s:
        rows = Registry(s).summaries(args.tenant)
    if args.json:
        emit_json(rows)
        return 0
    table(
        ["tenant", "name", "latest", "labels", "updated", "message"],
        [
            (r["tenant"], r["name"], f"v{r['latest']}", ", ".join(f"{k}=v{n}" for k, n in sorted(r["labels"].items())),
             when(r["updated_at"]), (r["message"] or "")[:50])
            for r in rows
        ],
    )  # fmt: skip
    return 0


def _which(ref: str) -> tuple[int | None, str | None]:
    """`3` or `v3` → version 3; anything else a label."""
    digits = ref[1:] if ref[:1] == "v" else ref
    return (int(digits), None) if digits.isdigit() else (None, ref)


def _find(s: Any, tenant: str, name: str, ref: str | None) -> Any:
    from keel.prompts.registry import Registry

    version, label = _which(ref) if ref else (None, None)
    found = Registry(s).find(tenant, name, version=version, label=label)
    if found is None:
        raise Failure(f"prompt {name} has no {ref or 'versions'} in tenant {tenant}")
    return found


def run_show(args: argparse.Namespace) -> int:
    from keel.prompts.registry import version_view

    name, _, ref = args.ref.partition("@")
    with store(args) as s:
        v = _find(s, args.tenant, name, ref or None)
        view = version_view(v, s.list_prompt_labels(args.tenant, name))
    if args.json:
        emit_json(view)
        return 0
    print(
        f"{v.name} v{v.version}  {when(v.created_at)}  by {v.author or '-'}  labels: {', '.join(view['labels']) or '-'}"
    )
    print(f"hash {v.hash}")
    if v.message:
        print(f"message: {v.message}")
    print(_yaml(v.content.json()), end="")
    return 0


def _yaml(data: dict[str, Any]) -> str:
    import yaml

    kept = {k: v for k, v in data.items() if v not in (None, [], {})}
    return str(yaml.safe_dump(kept, sort_keys=False, allow_unicode=True, width=100))


def run_diff(args: argparse.Namespace) -> int:
    with store(args) as s:
        old, new = _find(s, args.tenant, args.name, args.old), _find(s, args.tenant, args.name, args.new)
    lines = difflib.unified_diff(
        _yaml(old.content.json()).splitlines(keepends=True),
        _yaml(new.content.json()).splitlines(keepends=True),
        f"{args.name}@v{old.version}",
        f"{args.name}@v{new.version}",
    )
    print("".join(lines), end="")
    return 0


def run_label(args: argparse.Namespace) -> int:
    from keel.prompts.registry import ContentError, Registry, label_view

    version, _ = _which(args.version)
    if version is None:
        raise Failure(f"'{args.version}' is not a version number (3 or v3)")
    with store(args) as s:
        try:
            moved = Registry(s, _audit(s)).set_label(
                args.tenant, args.name, args.label, version, by="cli", admin=True, protected=args.protected
            )
        except ContentError as err:
            raise Failure(err.message) from None
    if moved is None:
        raise Failure(f"prompt {args.name} has no version {version} in tenant {args.tenant}")
    if args.json:
        emit_json(label_view(moved))
    else:
        print(f"{args.name} {args.label} → v{moved.version}{' (protected)' if moved.protected else ''}")
    return 0


def register_rollout(verbs: Any) -> None:
    roll = verbs.add_parser(
        "rollout", help="send a share of a label's calls to another version (sticky per user), guarded"
    )
    roll.add_argument("name")
    roll.add_argument("--label", required=True)
    roll.add_argument("--to", required=True, metavar="VERSION")
    roll.add_argument("--weight", required=True, type=float, metavar="PERCENT")
    roll.add_argument(
        "--guard", action="append", default=[], metavar="EXPR",
        help="error_rate<0.02, p95_ms<4000, cost_per_call<0.01, feedback>=0.7 (repeatable); a breach rolls back",
    )  # fmt: skip
    roll.add_argument(
        "--step", action="append", type=float, default=[], metavar="PERCENT", help="weights to step up to"
    )
    roll.add_argument("--every", metavar="DURATION", help="how long the guards hold before each step (1h, 10m)")
    roll.add_argument("--window", default="5m", metavar="DURATION", help="the guards' window (default 5m)")
    roll.add_argument("--min-calls", type=int, default=50, help="calls of the new version before judging it")
    roll.add_argument("--tenant", required=True)
    roll.add_argument("--json", action="store_true")
    roll.set_defaults(run=run_rollout)
    back = verbs.add_parser("rollback", help="end a label's rollout: every call gets its stable version")
    back.add_argument("name")
    back.add_argument("--label", required=True)
    back.add_argument("--tenant", required=True)
    back.add_argument("--json", action="store_true")
    back.set_defaults(run=run_rollback)
    hist = verbs.add_parser("history", help="a prompt's label moves: who, when, to what, why; and its rollouts")
    hist.add_argument("name")
    hist.add_argument("--label")
    hist.add_argument("--tenant", required=True)
    hist.add_argument("--limit", type=int, default=50)
    hist.add_argument("--json", action="store_true")
    hist.set_defaults(run=run_history)


def _label_line(name: str, lb: Any) -> str:
    shares = ", ".join(f"v{v} {w:g}%" for v, w in lb.rollout)
    return f"{name} {lb.label}: v{lb.version} stable" + (f", {shares}" if shares else "")


def run_rollout(args: argparse.Namespace) -> int:
    from keel.prompts.guards import plan_of
    from keel.prompts.registry import ContentError, LabelRefused, Registry, label_view, rollout_view

    version, _ = _which(args.to)
    if version is None:
        raise Failure(f"'{args.to}' is not a version number (3 or v3)")
    body: dict[str, Any] = {
        "guards": args.guard,
        "steps": args.step,
        "window": args.window,
        "min_calls": args.min_calls,
    }
    if args.every is not None:
        body["every"] = args.every
    try:
        plan = plan_of(body, args.weight)
        with store(args) as s:
            started = Registry(s, _audit(s)).start_rollout(
                args.tenant, args.name, args.label, version, args.weight, plan, by="cli", admin=True
            )
    except (ContentError, LabelRefused) as err:
        raise Failure(f"{getattr(err, 'field', 'rollout')}: {err}") from None
    if started is None:
        raise Failure(f"prompt {args.name} has no label {args.label} or no version {version} in tenant {args.tenant}")
    moved, rollout = started
    if args.json:
        emit_json({"label": label_view(moved), "rollout": rollout_view(rollout)})
        return 0
    print(_label_line(args.name, moved))
    if plan.guards:
        print(f"guards: {', '.join(plan.guards)} over {plan.window_s:g} s, from {plan.min_calls} calls")
    if plan.every_s is not None:
        steps = " → ".join(f"{w:g}%" for w in (args.weight, *plan.steps, 100.0))
        print(f"steps: {steps}, each after {plan.every_s:g} s held")
    return 0


def run_rollback(args: argparse.Namespace) -> int:
    from keel.prompts.registry import ContentError, Registry, label_view

    with store(args) as s:
        try:
            moved = Registry(s, _audit(s)).rollback(args.tenant, args.name, args.label, by="cli", admin=True)
        except ContentError as err:
            raise Failure(err.message) from None
    if moved is None:
        raise Failure(f"prompt {args.name} has no label {args.label} in tenant {args.tenant}")
    if args.json:
        emit_json(label_view(moved))
    else:
        print(_label_line(args.name, moved))
    return 0


def run_history(args: argparse.Namespace) -> int:
    from keel.prompts.registry import Registry, move_view, rollout_view

    with store(args) as s:
        registry = Registry(s)
        moves = registry.history(args.tenant, args.name, args.label, max(1, min(args.limit, 10_000)))
        rollouts = [r for r in registry.rollouts(args.tenant, args.name) if args.label in (None, r.label)]
    if args.json:
        emit_json({"moves": [move_view(m) for m in moves], "rollouts": [rollout_view(r) for r in rollouts]})
        return 0
    for r in rollouts:
        print(f"rollout {r.label}: v{r.stable} → v{r.version} {r.weight:g}% {r.state}  {r.reason or ''}".rstrip())
    table(
        ["when", "label", "version", "rollout", "actor", "reason"],
        [
            (when(m.at), m.label, f"v{m.version}", ", ".join(f"v{v} {w:g}%" for v, w in m.rollout),
             m.actor or "-", (m.reason or "")[:80])
            for m in moves
        ],
    )  # fmt: skip
    return 0


def run_feedback(args: argparse.Namespace) -> int:
    import time

    from keel.errors import InvalidRequest
    from keel.prompts.feedback import summary
    from keel.traces.writer import parse_window

    try:
        since, until = parse_window(args.since, args.until, time.time())
    except InvalidRequest as err:
        raise Failure(err.message) from None
    with store(args) as s:
        rows = summary(s, args.tenant, since, until, args.by)
    if args.json:
        emit_json(rows)
        return 0
    table([args.by, "scores", "mean"], [(r[args.by] or "-", r["count"], f"{r['mean_score']:.3f}") for r in rows])
    return 0


def _audit(s: Store) -> AuditLog:
    """The label moves and rollouts the CLI makes are audit entries, as the admin API's are."""
    from keel.audit.log import AuditLog

    return AuditLog(s)
