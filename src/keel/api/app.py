"""The ASGI application: gateway routes, admin API, dashboard, health probes; lifespan starts and drains the runtime."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from keel.agents.sandbox import Sandbox
from keel.alerts.slo import slos_of
from keel.api.admin import Admin
from keel.api.agents_admin import AgentsAdmin, dashboard_decide
from keel.api.agents_named import NamedAgents
from keel.api.anthropic import AnthropicEdge
from keel.api.audit_admin import AuditAdmin
from keel.api.batches import BatchesEdge
from keel.api.completions import Completions
from keel.api.deferred import AsyncEdge
from keel.api.evals_admin import EvalsAdmin
from keel.api.files import FilesEdge
from keel.api.forward import Forwarder
from keel.api.guard import Guard
from keel.api.mcp import McpEdge
from keel.api.metrics import MetricsEndpoint
from keel.api.online_evals import OnlineEvalsAdmin
from keel.api.openai import OpenAIEdge, error_body
from keel.api.prompts_admin import PromptsAdmin
from keel.api.rag_admin import RagAdmin
from keel.api.rag_search import RagSearchEdge
from keel.api.responses import ResponsesEdge
from keel.api.sso_admin import SsoAdmin
from keel.api.tenancy_admin import TenancyAdmin
from keel.audit.log import AuditLog
from keel.audit.siem import SiemShipper
from keel.config.sections.server import CorsConfig
from keel.dashboard.pages import Dashboard
from keel.errors import KeelError, NotFound, RequestError
from keel.gateway.warmth import WarmthBook
from keel.runtime.components import Runtime
from keel.tenancy.directory import Directory
from keel.tenancy.sso import SignOn
from keel.wire.anthropic_response import error_json as anthropic_error_json

Endpoint = Callable[[Request], Awaitable[Response]]


class FastPath:
    """Sends the model routes straight to their endpoints, past Starlette's router and middleware.

    The endpoints catch their own errors and render them, so the middleware adds nothing there
    but cost on the hottest path; every other route (admin, health, lifespan) goes to Starlette.
    """

    def __init__(self, app: Starlette, routes: dict[tuple[str, str], Endpoint]) -> None:
        self.app = app
        self._routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            endpoint = self._routes.get((scope["method"], scope["path"]))
            if endpoint is not None:
                response = await endpoint(Request(scope, receive))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class CorsFastPath(FastPath):
    """The FastPath behind CORS (`server.cors`): preflights are answered there, before any key check.
    A separate class, so that with CORS off the model routes pay nothing for it."""

    def __init__(self, app: Starlette, routes: dict[tuple[str, str], Endpoint], cors: CorsConfig) -> None:
        super().__init__(app, routes)
        self._cors = CORSMiddleware(
            super().__call__,
            allow_origins=cors.origins,
            allow_methods=cors.methods,
            allow_headers=cors.headers,
            allow_credentials=cors.credentials,
            expose_headers=cors.expose_headers,
            max_age=cors.max_age_s,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._cors(scope, receive, send)


class MethodNotAllowed(RequestError):
    status = 405
    code = "method_not_allowed"


def unprefixed(routes: list[Route]) -> list[Route]:
    """Each `/v1/...` model route also without its prefix (`/chat/completions`): clients whose base URL
    lacks `/v1` (Azure-style and some SDK defaults) reach the same endpoint."""
    return [
        Route(r.path[3:], r.endpoint, methods=sorted(r.methods or ()))
        for r in routes
        if r.path.startswith("/v1/") and isinstance(r, Route)
    ]


def azure_routes(edge: OpenAIEdge, completions: Completions) -> list[Route]:
    """Azure OpenAI's URL shape; the deployment names the alias (`?api-version=` is accepted and ignored)."""
    base = "/openai/deployments/{deployment}/"
    return [
        Route(base + "chat/completions", edge.chat, methods=["POST"]),
        Route(base + "embeddings", edge.embeddings, methods=["POST"]),
        Route(base + "completions", completions.create, methods=["POST"]),
    ]


async def not_routed(request: Request, exc: Exception) -> Response:
    """Unknown route (404) or method (405), as JSON in the caller's format (Anthropic's under /v1/messages)."""
    status = exc.status_code if isinstance(exc, HTTPException) else 404
    headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else {}
    path, method = request.url.path, request.method
    if status == 405:
        err: KeelError = MethodNotAllowed(f"Method {method} is not allowed on {path}; allowed: {headers.get('allow')}.")
    else:
        err = NotFound(f"Unknown route: {method} {path}. The model routes are under /v1 (see /v1/models).")
    if path.startswith(("/v1/messages", "/messages")):
        body = orjson.dumps(anthropic_error_json(err))
    else:
        body = error_body(err)
    return Response(body, status, headers, "application/json")


def create_app(runtime: Runtime) -> FastPath:
    deferral = AsyncEdge(runtime)
    edge = OpenAIEdge(runtime, deferral)
    forward = Forwarder(runtime)
    anthropic = AnthropicEdge(runtime, forward)
    completions = Completions(runtime, forward)
    responses = ResponsesEdge(runtime)
    dashboard = Dashboard(
        runtime.store,
        runtime.blobs,
        runtime.config.admin_token,
        stuck_after=runtime.config.jobs.stuck_after,
        slos=slos_of(runtime.config.models),
        audit=runtime.find(AuditLog),
        directory=runtime.find(Directory),
        sign_on=runtime.find(SignOn),
        session_secret=runtime.config.sso.session_secret,
        session_ttl_s=runtime.config.sso.session_ttl_s,
        public_url=runtime.config.sso.public_url,
        decide=dashboard_decide(runtime),  # approvals in the dashboard
    )
    warmth = runtime.find(WarmthBook)
    siem = runtime.find(SiemShipper)
    mcp = McpEdge(runtime)  # Keel's tools as an MCP server at /mcp
    guard = Guard(runtime)  # every admin route's: who is asking, may they, on which tenant; audit

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def openapi(request: Request) -> Response:
        from keel.api.openapi.document import document_bytes  # built on first ask, then cached

        return Response(document_bytes(), 200, media_type="application/json")

    async def readyz(request: Request) -> Response:
        # The key poller is the store probe (no query per probe): a database outage leaves the gateway
        # ready while it can still vouch for known keys, so load balancers keep it in rotation.
        auth, stale_s = runtime.authenticator, runtime.config.server.key_stale_s
        down, age = auth.store_down(), auth.state_age()
        if down and age > stale_s:
            reason = f"store: unreachable, and key state older than server.key_stale_s ({stale_s:g} s)"
            return JSONResponse({"status": "unavailable", "reason": reason}, 503)
        stats = runtime.writer.stats
        otel = runtime.exporter
        spans = (
            {}
            if otel is None
            else {
                "otel_exporter": otel.health() or "ok",
                "otel_queue": otel.depth,
                "otel_spans_exported": otel.stats.exported,
                "otel_spans_dropped": otel.stats.dropped,
                "otel_spans_failed": otel.stats.failed,
                "otel_restarts": otel.stats.restarts,
            }
        )
        trouble, failing = runtime.writer.health(), runtime.writer.failing()
        body = {
            "status": "ready" if failing is None else "unavailable",
            "trace_writer": trouble or "ok",
            "trace_queue": runtime.writer.depth,
            "traces_written": stats.written,
            "traces_spilled": stats.spilled,
            "traces_dropped": stats.dropped,
            "traces_quarantined": stats.quarantined,
            "trace_flush_failures": stats.failed_flushes,
            "trace_writer_restarts": stats.restarts,
            "trace_writer_last_error": stats.last_error,
            "unauthenticated": runtime.trace_stage.unauthenticated,  # refused before auth: counted, not traced
            "limits_store_unavailable": runtime.limits_stage.unavailable,
            "store": "unreachable" if down else "ok",
            "key_state_age_s": round(age, 3),
            "keys_served_stale": auth.stats.stale,  # answered from the last known state (store silent)
            "keys_refused_unavailable": auth.stats.unavailable,  # 503: no known state, store silent
            "limit_overrides_age_s": round(time.time() - runtime.limits_stage.read_at, 3),
            **spans,
            # background workers (runtime/workers.py): "ok", or why one is not running until it restarts
            "workers": {name: why or "ok" for name, why in runtime.workers.health().items()},
        }
        sandbox = runtime.find(Sandbox)
        if sandbox is not None:  # code tools run with the rlimits alone where cgroups cannot be made
            body["sandbox_cgroups"] = sandbox.cgroup_problem or "ok"
        if siem is not None:  # the audit log's streaming export: its lag and failures (never unready for it)
            body["audit_siem"] = siem.stats.json()
        if warmth:  # self-hosted servers' readiness; a warming one leaves the gateway ready (it reroutes)
            body["targets"] = {key: w.state for key, w in warmth.targets()}
        # Traces at risk take this process out; a stalled store does not (records wait, calls are served).
        if failing is not None:
            return JSONResponse({**body, "reason": f"trace writer: {failing}"}, 503)
        return JSONResponse(body)

    model_routes = [
        Route("/v1/chat/completions", edge.chat, methods=["POST"]),
        Route("/v1/completions", completions.create, methods=["POST"]),
        Route("/v1/embeddings", edge.embeddings, methods=["POST"]),
        Route("/v1/moderations", forward.moderations, methods=["POST"]),
        Route("/v1/rerank", forward.rerank, methods=["POST"]),
        Route("/v1/messages", anthropic.messages, methods=["POST"]),
        Route("/v1/messages/count_tokens", anthropic.count_tokens, methods=["POST"]),
        Route("/v1/models", edge.models, methods=["GET"]),
        Route("/v1/models/{model:path}", edge.model, methods=["GET"]),
        Route("/v1/responses", responses.create, methods=["POST"]),
        Route("/v1/responses/{response_id}", responses.retrieve, methods=["GET"]),
        Route("/v1/responses/{response_id}", responses.delete, methods=["DELETE"]),
        Route("/v1/responses/{response_id}/input_items", responses.input_items, methods=["GET"]),
    ]
    routes = [
        *model_routes,
        *unprefixed(model_routes),
        *azure_routes(edge, completions),
        *FilesEdge(runtime).routes(),  # the OpenAI Files and Batch APIs, async calls' jobs
        *BatchesEdge(runtime).routes(),
        *deferral.routes(),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/api/openapi.json", openapi, methods=["GET"]),  # public: the admin API's OpenAPI document
        *Admin(runtime, guard).routes(),
        *PromptsAdmin(runtime, guard).routes(),
        *RagSearchEdge(runtime, guard).routes(),
        *RagAdmin(runtime, guard).routes(),  # RAG collections and documents
        *OnlineEvalsAdmin(runtime, guard).routes(),
        *EvalsAdmin(runtime, guard).routes(),
        *AgentsAdmin(runtime, guard).routes(),
        *NamedAgents(runtime, guard).routes(),  # after tools/secrets/runs: /api/agents/{name} must not shadow them
        *TenancyAdmin(runtime, guard).routes(),  # users, teams, personal access tokens
        *AuditAdmin(runtime, guard).routes(),  # audit queries, verify, range export
        *SsoAdmin(runtime, guard).routes(),  # JWT bearers (a guard resolver); /api/whoami
        *mcp.routes(),
        *dashboard.routes(),
    ]
    if runtime.metrics is not None:
        routes.append(Route("/metrics", MetricsEndpoint(runtime, dashboard.throttle.stats).scrape, methods=["GET"]))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await runtime.start()
        try:
            async with mcp.running():
                yield
        finally:
            await runtime.aclose()

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: not_routed, 405: not_routed})
    app.state.guard = guard  # its rules: every admin route's permission (the permission matrix test reads them)
    hot = {
        ("POST", r.path): r.endpoint
        for r in (*model_routes, *unprefixed(model_routes))
        if r.methods and "POST" in r.methods and "{" not in r.path
    }
    cors = runtime.config.server.cors
    return CorsFastPath(app, hot, cors) if cors.origins else FastPath(app, hot)
