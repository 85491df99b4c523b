"""The API application: routes, auth, problem details, CORS, offline docs, request metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from cryptoflow_runtime.postgres import create_pool
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline
from starlette.responses import Response

from . import problems
from .auth import Gate
from .config import ApiSettings
from .keys import KeyCache
from .live import LiveRelay
from .metrics import REQUEST_SECONDS, REQUESTS
from .routes import data, health, live
from .state import ApiState

NAME = "api"
VERSION = "1"
log = logging.getLogger(__name__)

DESCRIPTION = """\
The cryptoflow warehouse over HTTP, and its public subjects live.

* **Warehouse**: `GET /v1/<resource>` with filters (exchange, symbol, timeframe, time range), ordered by the
  resource's key; `limit` makes pages, `cursor` (from `X-Next-Cursor`, `Link: rel=next`, or JSON's
  `next_cursor`) continues after the previous page. JSON, CSV, Parquet or Arrow IPC, by `Accept` or `format=`;
  every response streams, whatever the range's size.
* **Live**: `GET /v1/stream?subjects=…` (Server-Sent Events) and `/v1/ws` (WebSocket).
* **Auth**: `Authorization: Bearer <key>` (`cryptoflow api-key create NAME`); errors are RFC 9457 problem details.
"""


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
        try:
            await relay.start()
        except Exception as exc:  # live routes answer 503 and /readyz says so; the rest works
            log.warning("NATS not reachable; live relay off", extra={"error": repr(exc)})
        gate = Gate(settings, KeyCache(pool, settings.key_cache_s))
        app.state.api = ApiState(settings=settings, pool=pool, gate=gate, relay=relay)
        log.info("api up", extra={"port": settings.http_port, "auth_required": settings.auth_required})
        try:
            yield
        finally:
            await relay.stop()
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

    @app.middleware("http")
    async def observe(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        name = getattr(route, "path", "unmatched")
        REQUESTS.labels(name, str(response.status_code)).inc()
        REQUEST_SECONDS.labels(name).observe(time.perf_counter() - started)
        if name not in ("/healthz", "/readyz", "/metrics"):
            caller = getattr(request.state, "caller", None)
            # The path without its query: a browser client's api_key would be in it.
            log.info(
                "request",
                extra={
                    "method": request.method,
                    "path": request.url.path,
                    "status": response.status_code,
                    "caller": caller.name if caller else None,
                    "ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )
        return response

    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET"],
            allow_headers=["Authorization", "Accept"],
            expose_headers=["X-Next-Cursor", "Link", "Retry-After"],
        )
    return app
