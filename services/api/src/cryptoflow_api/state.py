"""What the routes share: settings, the database pool, the gate, the live relay, resource shapes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import asyncpg
from fastapi import Request
from starlette.requests import HTTPConnection

from .auth import Caller, Gate
from .config import ApiSettings
from .live import LiveRelay
from .problems import ProblemError
from .query import Shape, describe
from .resources import Resource


@dataclass
class ApiState:
    settings: ApiSettings
    pool: asyncpg.Pool
    gate: Gate
    relay: LiveRelay
    shapes: dict[str, Shape] = field(default_factory=dict)
    _describing: asyncio.Lock = field(default_factory=asyncio.Lock)
    _probe: asyncpg.Connection | None = None

    async def database_answers(self) -> bool:
        """Whether PostgreSQL answers, on a connection of the probe's own: with every pooled
        connection streaming a response, the API is busy, not unready, and must stay in service."""
        try:
            async with asyncio.timeout(2.0):
                if self._probe is None or self._probe.is_closed():
                    self._probe = await asyncpg.connect(self.settings.database_url)
                return await self._probe.fetchval("SELECT true") is True
        except Exception:
            if self._probe is not None:
                self._probe.terminate()
                self._probe = None
            return False

    async def close(self) -> None:
        if self._probe is not None:
            await self._probe.close()
            self._probe = None

    async def shape(self, resource: Resource) -> Shape:
        """The resource's columns, read from the database the first time it is asked for (the API
        may start before the warehouse is migrated)."""
        if (known := self.shapes.get(resource.name)) is not None:
            return known
        async with self._describing:
            if resource.name not in self.shapes:
                try:
                    async with self.pool.acquire() as conn:
                        self.shapes[resource.name] = await describe(conn, resource)
                except asyncpg.UndefinedTableError:
                    raise ProblemError(
                        503, f"the warehouse has no {resource.name} yet (not migrated?)", kind="not-ready"
                    ) from None
        return self.shapes[resource.name]


def api_state(connection: HTTPConnection) -> ApiState:
    state: ApiState = connection.app.state.api
    return state


async def caller(request: Request) -> Caller:
    """Dependency of every protected route: the admitted caller, or a 401/429 problem."""
    caller = await api_state(request).gate.admit(request)
    request.state.caller = caller
    return caller
