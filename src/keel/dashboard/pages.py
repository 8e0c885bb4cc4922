"""The dashboard's routes: login and logout, the overview, the trace list and one trace, jobs, SLOs, evals,
prompts, and the approvals waiting for a person (the one page that changes something: POST, same-origin).

Every page but the login form needs a valid session cookie, else it redirects to the login form
(which names only the path to come back to, never a credential). Store reads run in worker threads.
Responses carry a Content-Security-Policy that allows no script and only the one inline stylesheet,
so even a bug in escaping could not run a trace's content; `Server-Timing` says where the time went.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import Any, Protocol
from urllib.parse import parse_qs, quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from keel.alerts.slo import statuses
from keel.config import SloConfig
from keel.dashboard.approvalpages import render_approvals
from keel.dashboard.evalpages import render_run, render_runs
from keel.dashboard.jobpages import jobs_query, render_jobs
from keel.dashboard.markup import CSS, Safe, h, layout
from keel.dashboard.overview import WINDOWS, read_overview, render_overview
from keel.dashboard.promptpages import PromptPageStore, read_list, read_prompt, render_prompt
from keel.dashboard.promptpages import render_list as render_prompts
from keel.dashboard.session import COOKIE, TTL_S, Sessions, landing
from keel.dashboard.slopages import render_slo
from keel.dashboard.ssopages import SsoPages
from keel.dashboard.throttle import LoginThrottle
from keel.dashboard.tracepages import list_params, render_list, render_trace
from keel.errors import InvalidRequest
from keel.evals.gate import Rule, compare_runs
from keel.store.protocols import AgentStore, BlobStore, CallRow, EvalStore, JobStore, SpanStore, TraceStore
from keel.tenancy.sso import SignOn
from keel.traces.writer import read_spans, read_trace, trace_query

_STYLE_HASH = base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()
HEADERS = {
    "content-security-policy": (
        f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "cache-control": "no-store",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
}
MAX_FORM = 4096
log = logging.getLogger("keel.dashboard")
Page = Callable[[Request], Awaitable[Response]]
Decide = Callable[[str, bool, str], Awaitable[tuple[CallRow | None, bool]]]  # (call id, approve, by)


def _page(title: str, body: Safe, status: int = 200, timing: str | None = None, signed_in: bool = True) -> Response:
    headers = dict(HEADERS)
    if timing:
        headers["server-timing"] = timing
    return HTMLResponse(str(layout(title, body, signed_in=signed_in, who=_WHO.get())), status, headers)


_next_path = landing
_WHO: ContextVar[str | None] = ContextVar("keel_dashboard_who", default=None)  # the signed-in label, per request


class PageStore(TraceStore, SpanStore, JobStore, EvalStore, PromptPageStore, AgentStore, Protocol):
    """What the pages read: traces, their rollups and spans; jobs; eval runs; prompts, rollouts and feedback;
    tool calls waiting for approval."""


class Dashboard:
    def __init__(
        self,
        store: PageStore,
        blobs: BlobStore | None,
        admin_token: str | None,
        throttle: LoginThrottle | None = None,
        stuck_after: int = 2,  # jobs.stuck_after
        slos: Mapping[str, SloConfig] | None = None,  # aliases' `slo:`
        sign_on: SignOn | None = None,  # `sso.providers`: "Sign in with ..." beside the admin-token form
        session_secret: str | None = None,  # `sso.session_secret`; default: derived from the admin token
        session_ttl_s: float = TTL_S,
        public_url: str | None = None,
        decide: Decide | None = None,  # approve or deny a pending tool call (keel.agents: Runs.decide)
    ) -> None:
        self._store = store
        self._blobs = blobs  # large payloads live there; the trace page reads them back
        self._sessions = Sessions(admin_token, session_ttl_s, session_secret)
        self.sso = SsoPages(self._sessions, sign_on, HEADERS, public_url)
        self.throttle = throttle or LoginThrottle()
        self._stuck_after = stuck_after
        self._slos = dict(slos or {})
        self._decide = decide

    def routes(self) -> list[Route]:
        return [
            Route("/ui/login", self.login_form, methods=["GET"]),
            Route("/ui/login", self.login, methods=["POST"]),
            Route("/ui/logout", self.logout, methods=["POST"]),
            *self.sso.routes(),
            Route("/ui", self._guard(self.overview), methods=["GET"]),
            Route("/ui/traces", self._guard(self.traces), methods=["GET"]),
            Route("/ui/traces/{trace_id}", self._guard(self.trace), methods=["GET"]),
            Route("/ui/jobs", self._guard(self.jobs), methods=["GET"]),
            Route("/ui/slo", self._guard(self.slo), methods=["GET"]),
            Route("/ui/evals", self._guard(self.evals), methods=["GET"]),
            Route("/ui/evals/{run_id}", self._guard(self.eval_run), methods=["GET"]),
            Route("/ui/prompts", self._guard(self.prompts), methods=["GET"]),
            Route("/ui/prompts/{tenant}/{name}", self._guard(self.prompt), methods=["GET"]),
            Route("/ui/approvals", self._guard(self.approvals), methods=["GET"]),
            Route("/ui/approvals/{call_id}/{action}", self._guard(self.decide), methods=["POST"]),
        ]

    def _guard(self, page: Page) -> Page:
        async def endpoint(request: Request) -> Response:
            if not self._sessions.enabled:
                return self._disabled()
            who = self._sessions.read(request.cookies.get(COOKIE))
            if who is None:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/ui/login?next={quote(target, safe='')}", 303, HEADERS)
            for name, value in (*request.path_params.items(), *request.query_params.multi_items()):
                if "\x00" in name or "\x00" in value:  # they reach store queries; PostgreSQL refuses NUL
                    body = h('<h1>Bad request</h1><p class="error">{}</p>', "Parameters must not contain NUL.")
                    return _page("Bad request", body, 400)
            request.state.signed_in = who
            label = _WHO.set(who.label)
            try:
                return await page(request)
            finally:
                _WHO.reset(label)

        return endpoint

    def _disabled(self) -> Response:
        fix = "Set admin_token (or sso.session_secret with sso.providers) in keel.yaml to use the dashboard."
        body = h("<h1>Dashboard disabled</h1><p>{}</p>", fix)
        return _page("Disabled", body, 403, signed_in=False)

    # ---- login and logout

    def _login_page(self, next_path: str, error: str | None = None, status: int = 200) -> Response:
        message = h('<p class="error" id="login-error">{}</p>', error) if error else Safe("")
        form = h(
            '<form method="post" action="/ui/login"><input type="hidden" name="next" value="{}">'
            '<label>Admin token<input type="password" name="token" autocomplete="current-password" autofocus></label>'
            '<button type="submit">Log in</button></form>',
            next_path,
        )
        form = form if self._sessions.has_token else Safe("")  # SSO only: no token to type
        body = h('<div class="login"><h1>Keel dashboard</h1>{}{}{}</div>', message, self.sso.links(next_path), form)
        return _page("Log in", body, status, signed_in=False)

    async def login_form(self, request: Request) -> Response:
        if not self._sessions.enabled:
            return self._disabled()
        return self._login_page(_next_path(request.query_params.get("next")))

    async def login(self, request: Request) -> Response:
        if not self._sessions.enabled:
            return self._disabled()
        body = await request.body()
        form = parse_qs(body[:MAX_FORM].decode("utf-8", "replace")) if len(body) <= MAX_FORM else {}
        next_path = _next_path((form.get("next") or [""])[0])
        client = request.client.host if request.client else "unknown"
        wait = self.throttle.retry_after(client)
        if wait > 0:  # locked out: not even the right token is checked, so guessing gains nothing
            seconds = math.ceil(wait)
            page = self._login_page(next_path, f"Too many failed logins: try again in {seconds} s.", 429)
            page.headers["retry-after"] = str(seconds)
            return page
        if not self._sessions.check_token((form.get("token") or [""])[0]):
            failures, lock = self.throttle.failed(client)
            locked = f", locked out for {lock:g} s" if lock else ""
            log.warning("dashboard login failed from %s (%d in a row%s)", client, failures, locked)
            return self._login_page(next_path, "That is not the admin token.", 401)
        self.throttle.succeeded(client)
        response = RedirectResponse(next_path, 303, HEADERS)
        response.set_cookie(
            COOKIE,
            self._sessions.issue(),
            max_age=int(self._sessions.ttl_s),
            path="/ui",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    async def logout(self, request: Request) -> Response:
        ended = await self.sso.logout(request, self._sessions.read(request.cookies.get(COOKIE)))
        response = ended or RedirectResponse("/ui/login", 303, HEADERS)
        response.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="strict")
        return response

    # ---- pages

    async def overview(self, request: Request) -> Response:
        t0 = time.perf_counter()
        window = request.query_params.get("window") or "24h"
        if window not in WINDOWS:
            body = h('<h1>Overview</h1><p class="error">{}</p>', f"'window' must be one of: {', '.join(WINDOWS)}.")
            return _page("Overview", body, 400)
        tenant = request.query_params.get("tenant") or None
        data = await asyncio.to_thread(read_overview, self._store, window, tenant, time.time())
        t1 = time.perf_counter()
        body = render_overview(data)
        t2 = time.perf_counter()
        return _page("Overview", body, timing=_timing(t0, t1, t2))

    async def traces(self, request: Request) -> Response:
        t0 = time.perf_counter()
        shown = dict(request.query_params)
        try:
            params = list_params(shown)
            query = trace_query(params, time.time())
        except InvalidRequest as err:
            return _page("Traces", render_list(shown, [], err.message), 400)
        rows = await asyncio.to_thread(self._store.list_traces, query)
        t1 = time.perf_counter()
        body = render_list(params, rows)
        return _page("Traces", body, timing=_timing(t0, t1, time.perf_counter()))

    async def trace(self, request: Request) -> Response:
        trace_id = request.path_params["trace_id"]
        row = await asyncio.to_thread(read_trace, self._store, self._blobs, trace_id)
        if row is None:
            return _page("Not found", h("<h1>No trace with id {}</h1>", trace_id), 404)
        spans = await asyncio.to_thread(read_spans, self._store, trace_id)
        return _page(f"Trace {trace_id[:12]}", render_trace(row, spans))

    async def jobs(self, request: Request) -> Response:
        t0 = time.perf_counter()
        try:
            params, query = jobs_query(dict(request.query_params), self._stuck_after)
        except ValueError as exc:
            body = render_jobs(dict(request.query_params), [], [], self._stuck_after, str(exc))
            return _page("Jobs", body, 400)
        depths = await asyncio.to_thread(self._store.job_depths, time.time(), self._stuck_after)
        rows = await asyncio.to_thread(self._store.list_jobs, query)
        t1 = time.perf_counter()
        body = render_jobs(params, depths, rows, self._stuck_after)
        return _page("Jobs", body, timing=_timing(t0, t1, time.perf_counter()))

    async def slo(self, request: Request) -> Response:
        t0 = time.perf_counter()
        found = await asyncio.to_thread(statuses, self._slos, self._store, time.time())
        t1 = time.perf_counter()
        return _page("SLOs", render_slo(found), timing=_timing(t0, t1, time.perf_counter()))

    async def approvals(self, request: Request) -> Response:
        q = request.query_params
        tenant = (q.get("tenant") or "").strip()
        rows = await asyncio.to_thread(lambda: self._store.list_calls(tenant=tenant or None, state="pending"))
        return _page("Approvals", render_approvals(tenant, rows, q.get("call"), q.get("result")))

    async def decide(self, request: Request) -> Response:
        call_id, action = request.path_params["call_id"], request.path_params["action"]
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
            return _page("Forbidden", h('<h1>Forbidden</h1><p class="error">{}</p>', "A cross-site form."), 403)
        if action not in ("approve", "deny") or self._decide is None:
            return _page("Not found", h("<h1>Not found</h1><p>{}</p>", "No such decision."), 404)
        row, moved = await self._decide(call_id, action == "approve", "dashboard")
        if row is None:
            return _page("Not found", h("<h1>Not found</h1><p>{}</p>", f"No tool call '{call_id}'."), 404)
        result = ("approved" if action == "approve" else "denied") if moved else "unchanged"
        return RedirectResponse(f"/ui/approvals?call={quote(call_id, safe='')}&result={result}", 303, HEADERS)

    async def evals(self, request: Request) -> Response:
        runs = await asyncio.to_thread(self._store.list_eval_runs, None, limit=100)
        return _page("Evals", render_runs(runs))

    async def eval_run(self, request: Request) -> Response:
        """?baseline=RUN|LABEL (default: the newest other finished run of the suite)."""
        run = await asyncio.to_thread(self._store.get_eval_run, None, request.path_params["run_id"])
        if run is None:
            return _page("Not found", h("<h1>No eval run with id {}</h1>", request.path_params["run_id"]), 404)
        results = await asyncio.to_thread(self._store.eval_results, run.id)
        ref = request.query_params.get("baseline") or await asyncio.to_thread(self._previous, run)
        comparison = None
        if ref:
            try:
                comparison = await asyncio.to_thread(compare_runs, self._store, run, ref, Rule())
            except LookupError as exc:
                return _page("Not found", h('<h1>Eval run {}</h1><p class="error">{}</p>', run.id, str(exc)), 404)
        return _page(f"Eval {run.id[-8:]}", render_run(run, results, comparison))

    def _previous(self, run: Any) -> str | None:
        for other in self._store.list_eval_runs(run.tenant, suite=run.suite, limit=50):
            if other.id != run.id and other.status == "finished" and other.created_at < run.created_at:
                return str(other.id)
        return None

    async def prompts(self, request: Request) -> Response:
        rows = await asyncio.to_thread(read_list, self._store, request.query_params.get("tenant") or None)
        return _page("Prompts", render_prompts(rows))

    async def prompt(self, request: Request) -> Response:
        t0 = time.perf_counter()
        tenant, name = request.path_params["tenant"], request.path_params["name"]
        try:
            view = await asyncio.to_thread(
                read_prompt, self._store, tenant, name, request.query_params.get("diff"), time.time()
            )
        except ValueError as exc:
            return _page("Bad request", h('<h1>Bad request</h1><p class="error" id="error">{}</p>', str(exc)), 400)
        if view is None:
            return _page("Not found", h("<h1>No prompt {} in tenant {}</h1>", name, tenant), 404)
        t1 = time.perf_counter()
        return _page(f"Prompt {name}", render_prompt(view), timing=_timing(t0, t1, time.perf_counter()))


def _timing(t0: float, t1: float, t2: float) -> str:
    return f"db;dur={(t1 - t0) * 1000:.2f}, render;dur={(t2 - t1) * 1000:.2f}"
