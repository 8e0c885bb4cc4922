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
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, Protocol
from urllib.parse import parse_qs, quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from keel.alerts.slo import statuses
from keel.audit.export import FORMATS
from keel.audit.log import AuditLog
from keel.config import SloConfig
from keel.dashboard.approvalpages import render_approvals
from keel.dashboard.auditpages import Verifier, audit_query, export_response, read_audit, render_audit, render_error
from keel.dashboard.evalpages import render_run, render_runs
from keel.dashboard.jobpages import jobs_query, render_jobs
from keel.dashboard.keypages import KeyPages, KeyPageStore
from keel.dashboard.markup import CSS, NAV, Safe, View, h, layout
from keel.dashboard.overview import WINDOWS, read_overview, render_overview
from keel.dashboard.promptpages import PromptPageStore, read_list, read_prompt, render_prompt
from keel.dashboard.promptpages import render_list as render_prompts
from keel.dashboard.session import COOKIE, TTL_S, Sessions, landing
from keel.dashboard.slopages import render_slo
from keel.dashboard.ssopages import SsoPages
from keel.dashboard.throttle import LoginThrottle
from keel.dashboard.tracepages import list_params, render_list, render_trace
from keel.dashboard.userpages import UserPages, render_roles
from keel.errors import AuthError, InvalidRequest
from keel.evals.gate import Rule, compare_runs
from keel.store.protocols import AgentStore, BlobStore, CallRow, EvalStore, JobStore, SpanStore, TraceStore
from keel.store.protocols.audit import AuditStore
from keel.store.protocols.tenancy import TenancyStore
from keel.tenancy.actor import Actor
from keel.tenancy.directory import PAT_PREFIX, Directory, actor_of
from keel.tenancy.roles import may, reaches_team, sees_content
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


def _page(
    title: str,
    body: Safe,
    status: int = 200,
    timing: str | None = None,
    signed_in: bool = True,
    nav: Sequence[tuple[str, str]] = NAV,
) -> Response:
    headers = dict(HEADERS)
    if timing:
        headers["server-timing"] = timing
    return HTMLResponse(str(layout(title, body, signed_in=signed_in, nav=nav, who=_WHO.get())), status, headers)


_next_path = landing
_WHO: ContextVar[str | None] = ContextVar("keel_dashboard_who", default=None)  # the signed-in label, per request


class PageStore(
    TraceStore,
    SpanStore,
    JobStore,
    EvalStore,
    PromptPageStore,
    AgentStore,
    KeyPageStore,
    AuditStore,
    TenancyStore,
    Protocol,
):
    """What the pages read: traces, their rollups and spans; jobs; eval runs; prompts, rollouts and feedback;
    tool calls waiting for approval; keys (and write: create, revoke); the audit log; users and teams."""


# Each page and form, the permission it needs (tenancy's matrix says which roles hold it), and the nav.
PAGES: dict[str, tuple[str, str | None]] = {  # path -> (permission, nav label or None)
    "/ui": ("usage.read", "Overview"),
    "/ui/traces": ("traces.read", "Traces"),
    "/ui/jobs": ("jobs.read", "Jobs"),
    "/ui/prompts": ("prompts.read", "Prompts"),
    "/ui/evals": ("evals.read", "Evals"),
    "/ui/slo": ("platform.read", "SLOs"),
    "/ui/keys": ("keys.read", "Keys"),
    "/ui/audit": ("audit.read", "Audit"),
    "/ui/users": ("users.read", "Users"),
    "/ui/teams": ("users.read", "Teams"),
    "/ui/roles": ("users.read", "Roles"),
    "/ui/approvals": ("approvals.decide", "Approvals"),
}


class Dashboard:
    def __init__(
        self,
        store: PageStore,
        blobs: BlobStore | None,
        admin_token: str | None,
        throttle: LoginThrottle | None = None,
        stuck_after: int = 2,  # jobs.stuck_after
        slos: Mapping[str, SloConfig] | None = None,  # aliases' `slo:`
        audit: AuditLog | None = None,  # where the pages' changes are recorded; the audit page reads its chain
        directory: Directory | None = None,  # users and teams (default: one over `store`)
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
        self._keys = KeyPages(store, audit)
        self._audit = audit or AuditLog(store)
        self._verifier = Verifier(self._audit, store)
        self._directory = directory or Directory(store)
        self._people = UserPages(self._directory, audit)
        self._decide = decide

    def routes(self) -> list[Route]:
        return [
            Route("/ui/login", self.login_form, methods=["GET"]),
            Route("/ui/login", self.login, methods=["POST"]),
            Route("/ui/logout", self.logout, methods=["POST"]),
            *self.sso.routes(),
            Route("/ui", self._guard(self.overview, PAGES["/ui"][0]), methods=["GET"]),
            Route("/ui/traces", self._guard(self.traces, PAGES["/ui/traces"][0]), methods=["GET"]),
            Route("/ui/traces/{trace_id}", self._guard(self.trace, PAGES["/ui/traces"][0]), methods=["GET"]),
            Route("/ui/jobs", self._guard(self.jobs, PAGES["/ui/jobs"][0]), methods=["GET"]),
            Route("/ui/slo", self._guard(self.slo, PAGES["/ui/slo"][0]), methods=["GET"]),
            Route("/ui/evals", self._guard(self.evals, PAGES["/ui/evals"][0]), methods=["GET"]),
            Route("/ui/evals/{run_id}", self._guard(self.eval_run, PAGES["/ui/evals"][0]), methods=["GET"]),
            Route("/ui/prompts", self._guard(self.prompts, PAGES["/ui/prompts"][0]), methods=["GET"]),
            Route("/ui/prompts/{tenant}/{name}", self._guard(self.prompt, PAGES["/ui/prompts"][0]), methods=["GET"]),
            Route("/ui/keys", self._guard(self.keys, "keys.read"), methods=["GET"]),
            Route("/ui/keys", self._guard(self.create_key, "keys.write"), methods=["POST"]),
            Route("/ui/keys/{key_id}/revoke", self._guard(self.confirm_revoke, "keys.write"), methods=["GET"]),
            Route("/ui/keys/{key_id}/revoke", self._guard(self.revoke_key, "keys.write"), methods=["POST"]),
            Route("/ui/audit", self._guard(self.audit, "audit.read"), methods=["GET"]),
            Route("/ui/audit/export", self._guard(self.audit_export, "audit.read"), methods=["GET"]),
            Route("/ui/users", self._guard(self.users, "users.read"), methods=["GET"]),
            Route("/ui/users", self._guard(self.add_user, "users.manage"), methods=["POST"]),
            Route("/ui/users/{user_id}/role", self._guard(self.set_role, "users.manage"), methods=["POST"]),
            Route("/ui/users/{user_id}/disable", self._guard(self.set_disabled, "users.manage"), methods=["POST"]),
            Route("/ui/teams", self._guard(self.teams, "users.read"), methods=["GET"]),
            Route("/ui/teams", self._guard(self.add_team, "users.manage"), methods=["POST"]),
            Route("/ui/roles", self._guard(self.roles, "users.read"), methods=["GET"]),
            Route("/ui/approvals", self._guard(self.approvals, "approvals.decide"), methods=["GET"]),
            Route("/ui/approvals/{call_id}/{action}", self._guard(self.decide, "approvals.decide"), methods=["POST"]),
        ]

    def _guard(self, page: Page, permission: str) -> Page:
        """Signed in (else to the login form), no NUL in parameters, and the actor holds `permission`;
        the page then finds the actor in `request.state.actor`."""

        async def endpoint(request: Request) -> Response:
            if not self._sessions.enabled:
                return self._disabled()
            signed_in = await self._signed_in(request)
            if signed_in is None:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/ui/login?next={quote(target, safe='')}", 303, HEADERS)
            actor, who = signed_in
            request.state.actor = actor
            for name, value in (*request.path_params.items(), *request.query_params.multi_items()):
                if "\x00" in name or "\x00" in value:  # they reach store queries; PostgreSQL refuses NUL
                    body = h('<h1>Bad request</h1><p class="error">{}</p>', "Parameters must not contain NUL.")
                    return self._view(request, View("Bad request", body, 400))
            label = _WHO.set(who)
            try:
                if not can(actor, permission):
                    if request.method == "POST":  # a refused change is audited like the admin API's
                        action = f"{permission} POST {request.url.path}"
                        result = {"status": 403, "outcome": "refused"}
                        await self._audit.record(
                            actor.id, action, None, tenant=actor.tenant, source_ip=actor.ip, result=result
                        )
                    return self._view(request, _refused(permission))
                return await page(request)
            finally:
                _WHO.reset(label)

        return endpoint

    async def actor(self, request: Request) -> Actor | None:
        """Who is asking (None: nobody, or a bad credential)."""
        signed_in = await self._signed_in(request)
        return None if signed_in is None else signed_in[0]

    async def _signed_in(self, request: Request) -> tuple[Actor, str] | None:
        """The one place a credential becomes an Actor, with the label the header shows. A session cookie
        names the admin token's operator or a user (signed in through SSO): a user is read back from the
        directory, so a role change applies at once and a disabled or removed user is signed out. A
        personal access token as `Authorization: Bearer keel_pat_…` is its user (scripts reading pages or
        the audit export; never a browser's forms, which need the session's CSRF token)."""
        ip = request.client.host if request.client else None
        who = self._sessions.read(request.cookies.get(COOKIE))
        if who is not None:
            if not who.actor.startswith("user:"):
                return who.as_actor(ip), who.label
            user = await asyncio.to_thread(self._store.get_user, who.actor.removeprefix("user:"))
            if user is None or user.disabled_at is not None:
                return None
            actor = actor_of(user, ip=ip)
            return actor, who.label if set(user.roles) == set(who.roles) else _label(actor, who.name)
        auth = request.headers.get("authorization") or ""
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        if token.startswith(PAT_PREFIX):
            try:
                actor = await self._directory.resolve(token, ip)
            except AuthError:
                return None
            return actor, _label(actor, None)
        return None

    def _view(self, request: Request, view: View, timing: str | None = None) -> Response:
        """`view` laid out with the nav entries the signed-in actor may open."""
        actor: Actor | None = getattr(request.state, "actor", None)
        nav = [(p, label) for p, (perm, label) in PAGES.items() if label and actor is not None and can(actor, perm)]
        return _page(view.title, view.body, view.status, timing, nav=nav)

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
            return self._view(request, View("Overview", body, 400))
        tenant = request.state.actor.tenant or request.query_params.get("tenant") or None
        data = await asyncio.to_thread(read_overview, self._store, window, tenant, time.time())
        t1 = time.perf_counter()
        body = render_overview(data)
        t2 = time.perf_counter()
        return self._view(request, View("Overview", body), _timing(t0, t1, t2))

    async def traces(self, request: Request) -> Response:
        t0 = time.perf_counter()
        shown = _scoped(request)
        try:
            params = list_params(shown)
            query = trace_query(params, time.time())
        except InvalidRequest as err:
            return self._view(request, View("Traces", render_list(shown, [], err.message), 400))
        rows = await asyncio.to_thread(self._store.list_traces, query)
        t1 = time.perf_counter()
        body = render_list(params, rows)
        return self._view(request, View("Traces", body), _timing(t0, t1, time.perf_counter()))

    async def trace(self, request: Request) -> Response:
        trace_id = request.path_params["trace_id"]
        actor: Actor = request.state.actor
        row = await asyncio.to_thread(read_trace, self._store, self._blobs, trace_id)
        if row is None or (actor.tenant is not None and row.tenant != actor.tenant):
            return self._view(request, View("Not found", h("<h1>No trace with id {}</h1>", trace_id), 404))
        spans = await asyncio.to_thread(read_spans, self._store, trace_id)
        content = await self._sees_content(actor, row.tenant)
        return self._view(request, View(f"Trace {trace_id[:12]}", render_trace(row, spans, content=content)))

    async def _sees_content(self, actor: Actor, tenant: str | None) -> bool:
        """Prompts and responses: with traces.content, else a viewer where the tenant allows it."""
        if can(actor, "traces.content"):
            return True
        row = await asyncio.to_thread(self._store.get_tenant, tenant) if tenant else None
        return sees_content(actor, row is not None and row.viewer_content)

    async def jobs(self, request: Request) -> Response:
        t0 = time.perf_counter()
        try:
            params, query = jobs_query(_scoped(request), self._stuck_after)
        except ValueError as exc:
            body = render_jobs(dict(request.query_params), [], [], self._stuck_after, str(exc))
            return self._view(request, View("Jobs", body, 400))
        depths = await asyncio.to_thread(self._store.job_depths, time.time(), self._stuck_after)
        rows = await asyncio.to_thread(self._store.list_jobs, query)
        t1 = time.perf_counter()
        body = render_jobs(params, depths, rows, self._stuck_after)
        return self._view(request, View("Jobs", body), _timing(t0, t1, time.perf_counter()))

    async def slo(self, request: Request) -> Response:
        t0 = time.perf_counter()
        found = await asyncio.to_thread(statuses, self._slos, self._store, time.time())
        t1 = time.perf_counter()
        return self._view(request, View("SLOs", render_slo(found)), _timing(t0, t1, time.perf_counter()))

    async def approvals(self, request: Request) -> Response:
        q = request.query_params
        tenant = request.state.actor.tenant or (q.get("tenant") or "").strip()
        rows = await asyncio.to_thread(lambda: self._store.list_calls(tenant=tenant or None, state="pending"))
        return self._view(request, View("Approvals", render_approvals(tenant, rows, q.get("call"), q.get("result"))))

    async def decide(self, request: Request) -> Response:
        call_id, action = request.path_params["call_id"], request.path_params["action"]
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
            body = h('<h1>Forbidden</h1><p class="error">{}</p>', "A cross-site form.")
            return self._view(request, View("Forbidden", body, 403))
        actor: Actor = request.state.actor
        missing = View("Not found", h("<h1>Not found</h1><p>{}</p>", f"No tool call '{call_id}'."), 404)
        if action not in ("approve", "deny") or self._decide is None:
            return self._view(request, View("Not found", h("<h1>Not found</h1><p>{}</p>", "No such decision."), 404))
        if actor.tenant is not None:  # another tenant's call is not found
            call = await asyncio.to_thread(self._store.get_call, call_id)
            if call is None or call.tenant != actor.tenant:
                return self._view(request, missing)
        row, moved = await self._decide(call_id, action == "approve", actor.id)
        if row is None:
            return self._view(request, missing)
        result = ("approved" if action == "approve" else "denied") if moved else "unchanged"
        return RedirectResponse(f"/ui/approvals?call={quote(call_id, safe='')}&result={result}", 303, HEADERS)

    async def evals(self, request: Request) -> Response:
        runs = await asyncio.to_thread(self._store.list_eval_runs, request.state.actor.tenant, limit=100)
        return self._view(request, View("Evals", render_runs(runs)))

    async def eval_run(self, request: Request) -> Response:
        """?baseline=RUN|LABEL (default: the newest other finished run of the suite)."""
        tenant = request.state.actor.tenant
        run = await asyncio.to_thread(self._store.get_eval_run, tenant, request.path_params["run_id"])
        if run is None:
            return self._view(
                request, View("Not found", h("<h1>No eval run with id {}</h1>", request.path_params["run_id"]), 404)
            )
        results = await asyncio.to_thread(self._store.eval_results, run.id)
        ref = request.query_params.get("baseline") or await asyncio.to_thread(self._previous, run)
        comparison = None
        if ref:
            try:
                comparison = await asyncio.to_thread(compare_runs, self._store, run, ref, Rule())
            except LookupError as exc:
                return self._view(
                    request, View("Not found", h('<h1>Eval run {}</h1><p class="error">{}</p>', run.id, str(exc)), 404)
                )
        return self._view(request, View(f"Eval {run.id[-8:]}", render_run(run, results, comparison)))

    def _previous(self, run: Any) -> str | None:
        for other in self._store.list_eval_runs(run.tenant, suite=run.suite, limit=50):
            if other.id != run.id and other.status == "finished" and other.created_at < run.created_at:
                return str(other.id)
        return None

    async def prompts(self, request: Request) -> Response:
        tenant = request.state.actor.tenant or request.query_params.get("tenant") or None
        rows = await asyncio.to_thread(read_list, self._store, tenant)
        rows = [r for r in rows if reaches_team(request.state.actor, r["team"])]  # as /api/prompts lists
        return self._view(request, View("Prompts", render_prompts(rows)))

    async def prompt(self, request: Request) -> Response:
        t0 = time.perf_counter()
        tenant, name = request.path_params["tenant"], request.path_params["name"]
        if request.state.actor.tenant not in (None, tenant):
            return self._view(request, View("Not found", h("<h1>No prompt {} in tenant {}</h1>", name, tenant), 404))
        try:
            view = await asyncio.to_thread(
                read_prompt, self._store, tenant, name, request.query_params.get("diff"), time.time()
            )
        except ValueError as exc:
            return self._view(
                request, View("Bad request", h('<h1>Bad request</h1><p class="error" id="error">{}</p>', str(exc)), 400)
            )
        if view is None:
            return self._view(request, View("Not found", h("<h1>No prompt {} in tenant {}</h1>", name, tenant), 404))
        t1 = time.perf_counter()
        return self._view(request, View(f"Prompt {name}", render_prompt(view)), _timing(t0, t1, time.perf_counter()))

    # ---- keys and audit

    async def keys(self, request: Request) -> Response:
        actor = request.state.actor
        return self._view(request, await self._keys.list(request, actor, can(actor, "keys.write")))

    async def create_key(self, request: Request) -> Response:
        return self._view(request, await self._keys.create(request, request.state.actor))

    async def confirm_revoke(self, request: Request) -> Response:
        return self._view(request, await self._keys.confirm(request, request.state.actor))

    async def revoke_key(self, request: Request) -> Response:
        done = await self._keys.revoke(request, request.state.actor)
        return done if isinstance(done, Response) else self._view(request, done)

    async def audit(self, request: Request) -> Response:
        t0 = time.perf_counter()
        actor: Actor = request.state.actor
        try:
            query = audit_query(request, actor)
        except ValueError as exc:
            shown = {k: request.query_params.get(k, "") for k in ("since", "until", "actor", "action", "tenant")}
            return self._view(request, render_error(shown, str(exc), actor.tenant is not None))
        page, verdict, at = await read_audit(self._store, self._verifier, query)
        t1 = time.perf_counter()
        body = render_audit(query, page, verdict, at, actor.tenant is not None)
        return self._view(request, View("Audit", body), _timing(t0, t1, time.perf_counter()))

    async def audit_export(self, request: Request) -> Response:
        actor: Actor = request.state.actor
        try:
            query = audit_query(request, actor)
        except ValueError as exc:
            shown = {k: request.query_params.get(k, "") for k in ("since", "until", "actor", "action", "tenant")}
            return self._view(request, render_error(shown, str(exc), actor.tenant is not None))
        fmt = request.query_params.get("format") or "jsonl"
        if fmt not in FORMATS:
            shown = {k: request.query_params.get(k, "") for k in ("since", "until", "actor", "action", "tenant")}
            return self._view(request, render_error(shown, f"'format' must be one of: {', '.join(FORMATS)}.", False))
        return export_response(self._store, query, fmt)

    # ---- users, teams, roles

    async def users(self, request: Request) -> Response:
        actor: Actor = request.state.actor
        return self._view(request, await self._people.users(request, actor, can(actor, "users.manage")))

    async def add_user(self, request: Request) -> Response:
        return self._respond(request, await self._people.add_user(request, request.state.actor))

    async def set_role(self, request: Request) -> Response:
        return self._respond(request, await self._people.set_role(request, request.state.actor))

    async def set_disabled(self, request: Request) -> Response:
        return self._respond(request, await self._people.set_disabled(request, request.state.actor))

    async def teams(self, request: Request) -> Response:
        actor: Actor = request.state.actor
        return self._view(request, await self._people.teams(request, actor, can(actor, "users.manage")))

    async def add_team(self, request: Request) -> Response:
        return self._respond(request, await self._people.add_team(request, request.state.actor))

    async def roles(self, request: Request) -> Response:
        return self._view(request, View("Roles", render_roles()))

    def _respond(self, request: Request, done: View | Response) -> Response:
        return done if isinstance(done, Response) else self._view(request, done)


def can(actor: Actor, permission: str) -> bool:
    """Does `actor` hold `permission` (keel.tenancy.roles' matrix, scopes applied)?"""
    return may(actor, permission)


def _scoped(request: Request) -> dict[str, str]:
    """The query's parameters, `tenant` forced to the actor's own when it has one."""
    params = dict(request.query_params)
    if request.state.actor.tenant is not None:
        params["tenant"] = request.state.actor.tenant
    return params


def _label(actor: Actor, name: str | None) -> str:
    roles = ", ".join(sorted(actor.roles))
    return f"{name or actor.id} ({roles}{f' in {actor.tenant}' if actor.tenant else ''})"


def _refused(permission: str) -> View:
    body = h('<h1>Not allowed</h1><p class="error" id="refused">Your role does not allow this ({}).</p>', permission)
    return View("Not allowed", body, 403)


def _timing(t0: float, t1: float, t2: float) -> str:
    return f"db;dur={(t1 - t0) * 1000:.2f}, render;dur={(t2 - t1) * 1000:.2f}"
