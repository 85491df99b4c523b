"""PostgreSQL pool that waits for the database instead of crashing at start."""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg

from .redaction import redact

__all__ = ["RETRYABLE_CONNECT_ERRORS", "create_pool", "redact"]

log = logging.getLogger(__name__)

# Errors that mean "the server is not there (yet)"; anything else (bad password, no database) is fatal.
RETRYABLE_CONNECT_ERRORS = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.TooManyConnectionsError,
)


async def create_pool(
    dsn: str,
    *,
    min_size: int = 1,
    max_size: int = 4,
    wait_s: float = 60.0,
    command_timeout: float | None = 120.0,
    server_settings: dict[str, str] | None = None,
) -> asyncpg.Pool:
    """`command_timeout` None: no limit (a streamed read lasts as long as its client reads);
    `server_settings`: session settings of every connection (e.g. TimeZone)."""
    deadline = time.monotonic() + wait_s
    delay = 0.2
    while True:
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                command_timeout=command_timeout,
                server_settings=server_settings,
            )
            assert pool is not None
            return pool
        except RETRYABLE_CONNECT_ERRORS as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("database not reachable, retrying", extra={"error": repr(exc), "retry_in_s": delay})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
