"""The trace list (filters over one bounded, limited trace query) and the page of one whole call.

Everything shown from a trace is untrusted (prompts, answers, error messages, tags): it reaches the
page only through `h`, which escapes it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson

from keel.dashboard.markup import Safe, h, join, ms, num, usd, when
from keel.dashboard.overview import WINDOWS
from keel.errors import InvalidRequest
from keel.traces.spans import duration_ms, tree
from keel.types import Span, TraceRecord

FILTERS = ("tenant", "user", "feature", "alias", "status")
STATUSES = ("ok", "error", "partial")
LIST_LIMIT = 100


def list_params(query: dict[str, str]) -> dict[str, str]:
    """The trace query's parameters from the filter form: empty fields dropped, the window one of WINDOWS."""
    params = {k: query[k].strip() for k in FILTERS if query.get(k, "").strip()}
    since = query.get("since") or "24h"
    if since not in WINDOWS:
        raise InvalidRequest(f"'since' must be one of: {', '.join(WINDOWS)}.", "since")
    if params.get("status", "ok") not in STATUSES:
        raise InvalidRequest(f"'status' must be one of: {', '.join(STATUSES)}.", "status")
    return {**params, "since": since, "limit": str(LIST_LIMIT)}


def render_list(params: dict[str, str], rows: list[TraceRecord], error: str | None = None) -> Safe:
    fields = join(
        h('<label>{}<input name="{}" value="{}"></label>', name, name, params.get(name, ""))
        for name in ("tenant", "user", "feature", "alias")
    )
    status = _select("status", ("", *STATUSES), params.get("status", ""))
    since = _select("since", tuple(WINDOWS), params.get("since", "24h"))
    form = h(
        '<form class="filters" method="get" action="/ui/traces">{}<label>status{}</label><label>since{}</label>'
        '<button type="submit">Filter</button></form>',
        fields,
        status,
        since,
    )
    if error:
        return h('<h1>Traces</h1>{}<p class="error" id="error">{}</p>', form, error)
    head = Safe(
        "<tr><th>Started (UTC)</th><th>Trace</th><th>Tenant</th><th>User</th><th>Feature</th><th>Alias</th>"
        '<th>Model</th><th>Status</th><th class="n">Latency</th><th class="n">Tokens in/out</th>'
        '<th class="n">Cost</th></tr>'
    )
    body = join(_list_row(r) for r in rows) or Safe('<tr><td colspan="11" class="muted">No traces</td></tr>')
    more = h('<p class="muted">The newest {} shown; narrow the filters for older ones.</p>', LIST_LIMIT)
    return h(
        '<h1>Traces</h1>{}<table id="traces">{}{}</table>{}',
        form,
        head,
        body,
        more if len(rows) >= LIST_LIMIT else "",
    )


def _select(name: str, options: tuple[str, ...], chosen: str) -> Safe:
    opts = join(
        h('<option value="{}"{}>{}</option>', o, Safe(" selected" if o == chosen else ""), o or "any") for o in options
    )
    return h('<select name="{}">{}</select>', name, opts)


def _list_row(r: TraceRecord) -> Safe:
    return h(
        '<tr data-trace="{}"><td>{}</td><td><a href="/ui/traces/{}">{}</a></td><td>{}</td><td>{}</td><td>{}</td>'
        '<td>{}</td><td>{}</td><td class="status-{}">{}</td><td class="n">{}</td><td class="n">{} / {}</td>'
        '<td class="n">{}</td></tr>',
        r.id,
        when(r.started_at),
        quote(r.id, safe=""),
        r.id[:12],
        r.tenant or "",
        r.user or "",
        r.feature or "",
        r.alias or "",
        r.model or "",
        r.status,
        r.status,
        ms(r.latency_ms),
        num(r.input_tokens),
        num(r.output_tokens),
        usd(r.cost_usd),
    )


# ---- one trace ------------------------------------------------------------------------------------


def render_trace(r: TraceRecord, spans: list[Span] | None = None, *, content: bool = True) -> Safe:
    """The whole call; without `content` (the actor's role may not see prompts and responses) everything
    but them."""
    hidden = Safe('<p class="muted" id="content-hidden">Hidden: your role does not show prompts and responses.</p>')
    return join(
        [
            h('<h1>Trace <code id="trace-id">{}</code></h1>', r.id),
            _facts(r),
            h("<h2>Spans</h2>{}", _spans(r, spans or [])),
            h('<h2>Messages</h2><div id="messages">{}</div>', _messages(r.request) if content else hidden),
            h('<h2>Response</h2><div id="response">{}</div>', _response(r) if content else hidden),
            h("<h2>Attempts</h2>{}", _attempts(r.attempt_log)),
            h('<h2>Routing decision</h2><pre id="route">{}</pre>', _json(r.route) if r.route else "–"),
            h("<h2>Raw request</h2><details><summary>JSON</summary><pre>{}</pre></details>", _json(r.request))
            if content
            else Safe(""),
        ]
    )


def _spans(r: TraceRecord, spans: list[Span]) -> Safe:
    """The call and its child spans as an indented tree: kind, name, duration, status, cost."""
    head = Safe('<tr><th>Span</th><th>Kind</th><th class="n">Duration</th><th>Status</th><th class="n">Cost</th></tr>')
    call = _span_row(0, r.id, "call", f"{r.endpoint} {r.alias or r.model or ''}", r.latency_ms, r.status, r.cost_usd)
    rows = [_span_row(d, s.span_id, s.kind, s.name, duration_ms(s), s.status, s.cost_usd) for d, s in tree(r.id, spans)]
    return h('<table id="spans">{}{}</table>', head, join([call, *rows]))


def _span_row(
    depth: int, span_id: str, kind: str, name: str, took: float | None, status: str, cost: float | None
) -> Safe:
    return h(
        '<tr data-span="{}" data-depth="{}"><td>{}{}</td><td>{}</td><td class="n">{}</td>'
        '<td class="status-{}">{}</td><td class="n">{}</td></tr>',
        span_id,
        depth,
        "\u2003" * (depth - 1) + "\u2514 " if depth else "",  # indented by depth (the policy allows no inline style)
        name,
        kind,
        ms(took),
        status,
        status,
        usd(cost),
    )


def _facts(r: TraceRecord) -> Safe:
    rows: list[tuple[str, object]] = [
        ("Started (UTC)", when(r.started_at)),
        ("Endpoint", r.endpoint + (" (stream)" if r.stream else "")),
        ("Tenant / key / user", f"{r.tenant or '–'} / {r.key_id or '–'} / {r.user or '–'}"),
        ("Feature / session", f"{r.feature or '–'} / {r.session or '–'}"),
        ("Alias → provider / model", f"{r.alias or '–'} → {r.provider or '–'} / {r.model or '–'}"),
        ("Status", f"{r.status} (HTTP {r.http_status})"),
        ("Error", f"{r.error_kind}: {r.error_message}" if r.error_kind else "–"),
        ("Attempts / fallback level", f"{r.attempts} / {r.fallback or '–'}"),
        ("Cache", f"{r.cache or '–'}" + (f" (saved {usd(r.cache_saved_usd)})" if r.cache_saved_usd else "")),
        (
            "Tokens in / cached / out / reasoning",
            f"{num(r.input_tokens)} / {num(r.cached_input_tokens)} / {num(r.output_tokens)} / {num(r.reasoning_tokens)}",
        ),
        ("Cost", usd(r.cost_usd)),
        ("Latency / TTFT / overhead", f"{ms(r.latency_ms)} / {ms(r.ttft_ms)} / {ms(r.overhead_ms)}"),
        ("Prompt version", r.prompt_version or "–"),
        ("Tags", _json(r.tags) if r.tags else "–"),
    ]
    return h(
        '<table id="facts">{}</table>',
        join(h('<tr><th>{}</th><td data-fact="{}">{}</td></tr>', k, k.split(" ")[0].lower(), v) for k, v in rows),
    )


def _text(content: Any) -> Safe:
    """A message's content: text as text, parts' text joined, anything else as JSON."""
    if isinstance(content, str):
        return h("<pre>{}</pre>", content)
    if isinstance(content, list):
        return join(
            h("<pre>{}</pre>", p["text"]) if isinstance(p, dict) and isinstance(p.get("text"), str) else _pre(p)
            for p in content
        )
    return _pre(content)


def _messages(request: Any) -> Safe:
    if not isinstance(request, dict):
        return Safe('<p class="muted">Not stored (payloads are off for this call).</p>')
    out: list[Safe] = []
    if request.get("system"):  # Anthropic-shaped requests keep the system prompt apart
        out.append(h('<div class="msg"><span class="role">system</span>{}</div>', _text(request["system"])))
    messages = request.get("messages")
    if not isinstance(messages, list):
        return join([*out, _pre({k: v for k, v in request.items() if k in ("input", "model")})])
    for m in messages:
        if not isinstance(m, dict):
            out.append(_pre(m))
            continue
        extra = {k: v for k, v in m.items() if k in ("tool_calls", "tool_call_id", "name")}
        out.append(
            h(
                '<div class="msg" data-role="{}"><span class="role">{}</span>{}{}</div>',
                m.get("role", ""),
                m.get("role", "?"),
                _text(m.get("content")),
                _pre(extra) if extra else "",
            )
        )
    return join(out)


def _response(r: TraceRecord) -> Safe:
    resp = r.response
    if not isinstance(resp, dict):
        return Safe('<p class="muted">No response recorded.</p>')
    tools = resp.get("tool_calls") or []
    return h(
        '<div class="msg"><span class="role">assistant</span>{}{}<span class="muted">finish: {}</span></div>',
        _text(resp.get("content") or ""),
        _pre(tools) if tools else "",
        resp.get("finish_reason") or "–",
    )


def _attempts(log: list[Any] | None) -> Safe:
    if not log:
        return Safe('<p class="muted">No attempts recorded.</p>')
    rows = join(
        h(
            '<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class="n">{}</td></tr>',
            i,
            a.get("level", ""),
            a.get("target", ""),
            a.get("outcome", ""),
            a.get("kind") or a.get("why") or "",
            ms(a["ms"]) if isinstance(a.get("ms"), int | float) else "",
        )
        for i, a in enumerate((x for x in log if isinstance(x, dict)), start=1)
    )
    head = Safe('<tr><th>#</th><th>Level</th><th>Target</th><th>Outcome</th><th>Why</th><th class="n">Time</th></tr>')
    return h('<table id="attempts">{}{}</table>', head, rows)


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2, default=str).decode()


def _pre(value: Any) -> Safe:
    return h("<pre>{}</pre>", _json(value))
