"""HTML built so that escaping cannot be forgotten: every value goes through `h`, which escapes it.

`Safe` marks markup that is already escaped (what `h` returns); `h(template, *values)` formats a
template written here with values escaped unless they are `Safe`. Trace content is untrusted, so
nothing reaches a page any other way. Pages also carry a CSP that allows no script at all.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


class Safe(str):
    """Markup that is already escaped."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class View:
    """A page for the dashboard to lay out: its title, body and status."""

    title: str
    body: Safe
    status: int = 200


def esc(value: object) -> Safe:
    if isinstance(value, Safe):
        return value
    return Safe(html.escape("" if value is None else str(value), quote=True))


def h(template: str, *values: object) -> Safe:
    """`template` (a literal in this package) with each `{}` filled by an escaped value."""
    return Safe(template.format(*(esc(v) for v in values)))


def join(parts: Iterable[Safe]) -> Safe:
    return Safe("".join(esc(p) for p in parts))


# ---- figures as text --------------------------------------------------------------------------


def num(n: float | None) -> str:
    return "–" if n is None else f"{n:,.0f}"


def usd(x: float | None) -> str:
    if x is None:
        return "–"
    return f"${x:,.2f}" if abs(x) >= 100 else f"${x:,.6f}"


def ms(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:,.0f} ms" if x >= 100 else f"{x:,.1f} ms"


def when(t: float | None) -> str:
    if t is None:
        return "–"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


CSS = """
*{box-sizing:border-box}body{margin:0;font:14px/1.4 system-ui,sans-serif;color:#1d2330;background:#f6f7f9}
header{display:flex;gap:1.2em;align-items:center;padding:.6em 1.2em;background:#1d2330;color:#fff}
header a{color:#cfd8ff;text-decoration:none}header b{margin-right:1em}header form{margin-left:auto}#whoami{margin-left:auto;color:#cfd8ff}#whoami+form{margin-left:0}
main{padding:1em 1.2em;max-width:1400px}h1{font-size:1.3em;margin:.2em 0 .6em}h2{font-size:1.05em;margin:1.2em 0 .4em}
table{border-collapse:collapse;background:#fff;width:100%;margin-bottom:.6em}
th,td{padding:.3em .6em;border-bottom:1px solid #e3e6ec;text-align:left;vertical-align:top}
td.n,th.n{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
.cards{display:flex;flex-wrap:wrap;gap:.6em}.card{background:#fff;padding:.6em 1em;border:1px solid #e3e6ec;min-width:9em}
.card b{display:block;font-size:1.3em}.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:.6em}
.chart{background:#fff;border:1px solid #e3e6ec;padding:.4em}.chart h3{font-size:.9em;margin:0 0 .2em}
.grid3{display:grid;grid-template-columns:repeat(auto-fit,minmax(440px,1fr));gap:.8em}
form.filters{display:flex;flex-wrap:wrap;gap:.5em;align-items:end;margin-bottom:.8em}
label{display:flex;flex-direction:column;font-size:.85em}input,select,button{font:inherit;padding:.25em .4em}
.error{color:#a40000}.status-error{color:#a40000}.status-partial{color:#a05a00}.muted{color:#6b7280}
pre{white-space:pre-wrap;word-break:break-word;background:#fff;border:1px solid #e3e6ec;padding:.6em;margin:.2em 0}
.msg{background:#fff;border:1px solid #e3e6ec;margin:.3em 0;padding:.4em .6em}.msg .role{font-weight:600}
.login{max-width:340px;margin:10vh auto;background:#fff;padding:1.4em;border:1px solid #e3e6ec}
.add{color:#0a6b2a}.del{color:#a40000}.rollout{background:#fff;border:1px solid #e3e6ec;padding:.4em .8em;margin:.4em 0}
#facts th{width:18em}.login form{display:flex;flex-direction:column;gap:.6em}nav.windows a{margin-right:.6em}nav.windows a.on{font-weight:700}
.notice{color:#0a6b2a}.ok{color:#0a6b2a}details pre{max-height:20em;overflow:auto}td.matrix{text-align:center}
"""


NAV = (
    ("/ui", "Overview"),
    ("/ui/traces", "Traces"),
    ("/ui/jobs", "Jobs"),
    ("/ui/prompts", "Prompts"),
    ("/ui/evals", "Evals"),
    ("/ui/slo", "SLOs"),
    ("/ui/keys", "Keys"),
    ("/ui/audit", "Audit"),
)


def layout(
    title: str, body: Safe, *, signed_in: bool = True, nav: Sequence[tuple[str, str]] = NAV, who: str | None = None
) -> Safe:
    """The page around `body`; signed in, a header with `nav` (the pages the actor may open), who is signed
    in, and Log out."""
    links = join(h('<a href="{}">{}</a>', path, label) for path, label in nav)
    header = h(
        '{}{}<form method="post" action="/ui/logout"><button type="submit">Log out</button></form>',
        links,
        h('<span id="whoami">{}</span>', who) if who else Safe(""),
    )
    return h(
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{} · Keel</title>'
        '<meta name="viewport" content="width=device-width,initial-scale=1"><style>{}</style></head>'
        "<body><header><b>Keel</b>{}</header><main>{}</main></body></html>",
        title,
        Safe(CSS),
        header if signed_in else Safe(""),
        body,
    )
