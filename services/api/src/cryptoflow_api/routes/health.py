"""/healthz (alive), /readyz (database and NATS reachable), /metrics (Prometheus), as every service."""

from __future__ import annotations

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.responses import JSONResponse, Response

from ..config import NAME
from ..state import api_state


def router() -> APIRouter:
    routes = APIRouter(tags=["health"])

    @routes.get("/healthz", summary="Alive")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok", "service": NAME})

    @routes.get("/readyz", summary="Ready: PostgreSQL answers and the live relay is connected to NATS")
    async def readyz(request: Request) -> JSONResponse:
        state = api_state(request)
        checks = {"database": await state.database_answers(), "nats": state.relay.connected}
        ready = all(checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "service": NAME, "checks": checks},
            status_code=200 if ready else 503,
        )

    @routes.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return routes
