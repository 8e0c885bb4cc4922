"""The ASGI application: gateway routes, admin API, health probes; lifespan starts and drains the runtime."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from keel.api.admin import Admin
from keel.api.openai import OpenAIEdge
from keel.runtime import Runtime


def create_app(runtime: Runtime) -> Starlette:
    edge = OpenAIEdge(runtime)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        try:
            await asyncio.wait_for(asyncio.to_thread(runtime.store.list_tenants), 2.0)
        except Exception as exc:
            return JSONResponse({"status": "unavailable", "reason": f"store: {type(exc).__name__}"}, 503)
        stats = runtime.writer.stats
        return JSONResponse({"status": "ready", "trace_queue": runtime.writer.depth, "traces_dropped": stats.dropped})

    routes = [
        Route("/v1/chat/completions", edge.chat, methods=["POST"]),
        Route("/v1/embeddings", edge.embeddings, methods=["POST"]),
        Route("/v1/models", edge.models, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        *Admin(runtime).routes(),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.aclose()

    return Starlette(routes=routes, lifespan=lifespan)
