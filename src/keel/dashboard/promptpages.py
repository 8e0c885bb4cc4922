"""The prompt pages: every prompt with its labels; one prompt's labels, rollouts (the new and the stable
variant side by side, with the figures the guards judge), label history, versions and a diff of two.

Read-only: moving labels stays with the admin API and the CLI. Prompt text and reasons are untrusted
(a tenant's key may push prompts): they reach the page only through `h`.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import orjson

from keel.dashboard.markup import Safe, h, join, ms, num, usd, when
from keel.prompts.guards import Figures, parse_guard
from keel.prompts.registry import Registry
from keel.prompts.rollouts import figures
from keel.store.protocols import (
    FeedbackStore,
    LabelMove,
    OnlineEvalStore,
    PromptLabel,
    PromptRollout,
    PromptStore,
    PromptVersion,
)

HISTORY_ROWS = 50


class PromptPageStore(PromptStore, FeedbackStore, OnlineEvalStore, Protocol):
    """What the prompt pages read (and the usage rollups, which every page store has); online scores for guards."""


@dataclass(frozen=True, slots=True)
class PromptView:
    tenant: str
    name: str
    versions: list[PromptVersion]
    labels: list[PromptLabel]
    rollouts: list[tuple[PromptRollout, Figures, Figures]]
    history: list[LabelMove]
    diff: tuple[int, int] | None


def read_list(store: PromptStore, tenant: str | None) -> list[dict[str, Any]]:
    return Registry(store).summaries(tenant)


def read_prompt(store: Any, tenant: str, name: str, diff: str | None, now: float) -> PromptView | None:
    """Blocking: run it in a worker thread. None when the prompt has no versions. ValueError for a bad diff."""
    versions = store.list_prompt_versions(tenant, name)
    if not versions:
        return None
    numbers = [v.version for v in versions]
    pair = _pair(diff, numbers)
    rollouts = [(r, *figures(store, r, now, scores=True)) for r in store.list_prompt_rollouts(tenant, name)]
    return PromptView(
        tenant,
        name,
        versions,
        store.list_prompt_labels(tenant, name),
        rollouts,
        store.prompt_label_history(tenant, name, limit=HISTORY_ROWS),
        pair,
    )


def _pair(diff: str | None, numbers: list[int]) -> tuple[int, int] | None:
    if not diff:
        return (numbers[-2], numbers[-1]) if len(numbers) > 1 else None
    old, _, new = diff.partition("..")
    if not (old.isdigit() and new.isdigit() and int(old) in numbers and int(new) in numbers):
        raise ValueError(f"'diff' must be two versions of this prompt as OLD..NEW, e.g. {numbers[0]}..{numbers[-1]}.")
    return int(old), int(new)


def render_list(rows: list[dict[str, Any]]) -> Safe:
    head = Safe(
        "<tr><th>Tenant</th><th>Prompt</th><th>Latest</th><th>Labels</th><th>Updated (UTC)</th><th>Message</th></tr>"
    )
    body = join(
        h(
            '<tr data-prompt="{}"><td>{}</td><td><a href="/ui/prompts/{}/{}">{}</a></td><td>v{}</td><td>{}</td>'
            "<td>{}</td><td>{}</td></tr>",
            r["name"],
            r["tenant"],
            quote(r["tenant"], safe=""),
            quote(r["name"], safe=""),
            r["name"],
            r["latest"],
            ", ".join(f"{k}=v{n}" for k, n in sorted(r["labels"].items())) or "–",
            when(r["updated_at"]),
            (r["message"] or "")[:80],
        )
        for r in rows
    ) or Safe('<tr><td colspan="6" class="muted">No prompts yet: keel prompts push FILE</td></tr>')
    return h('<h1>Prompts</h1><table id="prompts">{}{}</table>', head, body)


def render_prompt(v: PromptView) -> Safe:
    return join(
        [
            h('<h1 id="prompt-name">{} <span class="muted">{}</span></h1>', v.name, v.tenant),
            _labels(v.labels),
            _rollouts(v.rollouts),
            _history(v.history),
            _versions(v),
            _diff(v),
        ]
    )


def _labels(labels: list[PromptLabel]) -> Safe:
    rows = join(
        h(
            '<tr data-label="{}"><td>{}</td><td>v{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>',
            lb.label,
            lb.label,
            lb.version,
            ", ".join(f"v{n} {w:g}%" for n, w in lb.rollout) or "–",
            "yes" if lb.protected else "no",
            when(lb.updated_at),
            lb.updated_by or "–",
        )
        for lb in labels
    ) or Safe('<tr><td colspan="6" class="muted">No labels</td></tr>')
    head = Safe(
        "<tr><th>Label</th><th>Stable</th><th>Rollout</th><th>Protected</th><th>Moved (UTC)</th><th>By</th></tr>"
    )
    return h('<h2>Labels</h2><table id="labels">{}{}</table>', head, rows)


_METRICS: tuple[tuple[str, str, Callable[[Figures], str]], ...] = (
    ("calls", "Calls", lambda f: num(f.calls)),
    ("error_rate", "Error rate", lambda f: "–" if not f.calls else f"{f.errors / f.calls:.2%}"),
    ("p95_ms", "p95 latency", lambda f: ms(f.p95_ms)),
    ("cost_per_call", "Cost per call", lambda f: usd(f.cost_usd / f.calls) if f.calls else "–"),
    ("feedback", "Feedback", lambda f: f"{f.score_sum / f.scores:.2f} ({f.scores})" if f.scores else "–"),
)


def _rollouts(rollouts: list[tuple[PromptRollout, Figures, Figures]]) -> Safe:
    if not rollouts:
        return Safe('<h2>Rollouts</h2><p class="muted">No rollouts.</p>')
    return h("<h2>Rollouts</h2>{}", join(_rollout(r, new, stable) for r, new, stable in rollouts))


def _rollout(r: PromptRollout, new: Figures, stable: Figures) -> Safe:
    guards = {parse_guard(g).metric: g for g in r.plan.guards}
    head = h(
        '<tr><th>Over {} (since {})</th><th class="n">stable v{}</th><th class="n">new v{}</th><th>Guard</th></tr>',
        f"{r.plan.window_s:g} s",
        when(max(r.started_at, time.time() - r.plan.window_s)),
        r.stable,
        r.version,
    )
    rows = join(
        h(
            '<tr data-metric="{}"><th>{}</th><td class="n" data-variant="stable">{}</td>'
            '<td class="n" data-variant="new">{}</td><td>{}</td></tr>',
            key,
            title,
            show(stable),
            show(new),
            guards.get(key, "–"),
        )
        for key, title, show in _METRICS
    )
    steps = " → ".join(f"{w:g}%" for w in (*r.plan.steps, 100.0)) if r.plan.every_s is not None else "by hand"
    facts = h(
        "<p>Label <b>{}</b>: v{} → v{} at <b data-weight>{}%</b>, <b data-state>{}</b>; steps {}; judged from {} calls."
        ' Started {} by {}.</p><p class="muted" data-reason>{}</p>',
        r.label,
        r.stable,
        r.version,
        f"{r.weight:g}",
        r.state,
        steps,
        r.plan.min_calls,
        when(r.started_at),
        r.started_by or "–",
        r.reason or "",
    )
    return h(
        '<div class="rollout" data-rollout="{}">{}<table class="variants">{}{}</table></div>',
        r.label,
        facts,
        head,
        rows,
    )


def _history(moves: list[LabelMove]) -> Safe:
    head = Safe("<tr><th>When (UTC)</th><th>Label</th><th>Version</th><th>Rollout</th><th>Who</th><th>Why</th></tr>")
    rows = join(
        h(
            "<tr><td>{}</td><td>{}</td><td>v{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            when(m.at),
            m.label,
            m.version,
            ", ".join(f"v{n} {w:g}%" for n, w in m.rollout) or "–",
            m.actor or "–",
            m.reason or "",
        )
        for m in moves
    ) or Safe('<tr><td colspan="6" class="muted">No label moves</td></tr>')
    return h('<h2>Label history</h2><table id="history">{}{}</table>', head, rows)


def _versions(v: PromptView) -> Safe:
    labelled: dict[int, list[str]] = {}
    for lb in v.labels:
        labelled.setdefault(lb.version, []).append(lb.label)
    head = Safe(
        "<tr><th>Version</th><th>Created (UTC)</th><th>Author</th><th>Labels</th><th>Alias</th><th>Message</th></tr>"
    )
    rows = join(
        h(
            '<tr data-version="{}"><td>v{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>',
            x.version,
            x.version,
            when(x.created_at),
            x.author or "–",
            ", ".join(labelled.get(x.version, [])) or "–",
            x.content.alias or "–",
            x.message or "",
        )
        for x in reversed(v.versions)
    )
    return h('<h2>Versions</h2><table id="versions">{}{}</table>', head, rows)


def _diff(v: PromptView) -> Safe:
    if v.diff is None:
        return Safe("")
    by = {x.version: x for x in v.versions}
    old, new = by[v.diff[0]], by[v.diff[1]]
    lines = difflib.unified_diff(_text(old), _text(new), f"v{old.version}", f"v{new.version}", lineterm="")
    shown = join(
        h('<span class="{}">{}</span>\n', "add" if ln[:1] == "+" else "del" if ln[:1] == "-" else "", ln)
        for ln in lines
    )
    form = h(
        '<form class="filters" method="get"><label>diff (OLD..NEW)<input name="diff" value="{}"></label>'
        '<button type="submit">Compare</button></form>',
        f"{old.version}..{new.version}",
    )
    return h('<h2>Diff v{} → v{}</h2>{}<pre id="diff">{}</pre>', old.version, new.version, form, shown)


def _text(v: PromptVersion) -> list[str]:
    kept = {k: x for k, x in v.content.json().items() if x not in (None, [], {})}
    return orjson.dumps(kept, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode().splitlines()
