"""The API application: routes, auth, problem details, CORS, offline docs, request metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from cryptoflow_runtime.postgres import create_pool
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import problems
from .auth import Gate
from .config import ApiSettings
from .keys import KeyCache
from .live import LiveRelay
from .metrics import REQUEST_SECONDS, REQUESTS
from .routes import data, health, live
from .state import ApiState

VERSION = "1"
log = logging.getLogger(__name__)
_TRACER = trace.get_tracer("cryptoflow.api")

DESCRIPTION = """\
The cryptoflow warehouse over HTTP, and its public subjects live.

* **Warehouse**: `GET /v1/<resource>` with filters (exchange, symbol, timeframe, time range), ordered by the
  resource's key; `limit` makes pages, `cursor` (from `X-Next-Cursor`, `Link: rel=next`, or JSON's
  `next_cursor`) continues after the previous page. JSON, CSV, Parquet or Arrow IPC, by `Accept` or `format=`;
  every response streams, whatever the range's size.
* **Live**: `GET /v1/stream?subjects=…` (Server-Sent Events) and `/v1/ws` (WebSocket).
* **Auth**: `Authorization: Bearer <key>` (`cryptoflow api-key create NAME`); errors are RFC 9457 problem details.
"""


class ObserveRequests:
    """Request metrics and one log line per request, as plain ASGI middleware: streamed bodies
    (and SSE) pass through untouched, which Starlette's BaseHTTPMiddleware does not guarantee."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        # A SERVER span per request, child of the caller's W3C traceparent if it sent one; the
        # request's log line carries its trace id (tracing is set up by main: OTEL_EXPORTER_OTLP_ENDPOINT).
        headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope.get("headers", [])}
        span = _TRACER.start_span(
            f"{scope['method']} {scope['path']}",
            context=propagate.extract(headers),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": scope["method"], "url.path": scope["path"]},
        )

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                route = getattr(scope.get("route"), "path", "unmatched")
                REQUEST_SECONDS.labels(route).observe(time.perf_counter() - started)
            await send(message)

        with trace.use_span(span, end_on_exit=True):
            try:
                await self.app(scope, receive, observed_send)
            finally:
                route = getattr(scope.get("route"), "path", "unmatched")
                span.update_name(f"{scope['method']} {route}")
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                REQUESTS.labels(route, str(status)).inc()
                if route not in ("/healthz", "/readyz", "/metrics"):
                    caller = scope.get("state", {}).get("caller")
                    # The path without its query: a browser client's api_key would be in it.
                    log.info(
                        "request",
                        extra={
                            "method": scope["method"],
                            "path": scope["path"],
                            "status": status,
                            "caller": caller.name if caller else None,
                            "ms": round((time.perf_counter() - started) * 1000, 1),
                        },
                    )


def _document_bearer_auth(app: FastAPI) -> None:
    """Say in the OpenAPI document that /v1 takes `Authorization: Bearer <key>` (the gate is a
    plain dependency, which FastAPI does not describe by itself)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            document.setdefault("components", {})["securitySchemes"] = {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "`cryptoflow api-key create NAME`"}
            }
            for path, operations in document["paths"].items():
                if path.startswith("/v1/"):
                    for operation in operations.values():
                        operation["security"] = [{"apiKey": []}]
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: ApiSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await create_pool(
            settings.database_url,
            min_size=1,
            max_size=settings.pool_size,
            # A streamed response's COPY lasts as long as its client takes to read it.
            command_timeout=None,
            # COPY writes times as UTC and floats exactly (shortest round-trip form).
            server_settings={"TimeZone": "UTC", "DateStyle": "ISO", "extra_float_digits": "1"},
        )
        relay = LiveRelay(settings)
        await relay.start()
        gate = Gate(settings, KeyCache(pool, settings.key_cache_s))
        app.state.api = ApiState(settings=settings, pool=pool, gate=gate, relay=relay)
        log.info("api up", extra={"port": settings.http_port, "auth_required": settings.auth_required})
        try:
            yield
        finally:
            await relay.stop()
            await app.state.api.close()
            await pool.close()

    app = FastAPIOffline(
        title="cryptoflow API",
        version=VERSION,
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_url="/openapi.json",
    )
    problems.install(app)
    app.include_router(health.router())
    app.include_router(data.router(settings.max_page_rows))
    app.include_router(live.router())

    app.add_middleware(ObserveRequests)
    _document_bearer_auth(app)
    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET"],
            allow_headers=["Authorization", "Accept"],
            expose_headers=["X-Next-Cursor", "Link", "Retry-After"],
        )
    return app
