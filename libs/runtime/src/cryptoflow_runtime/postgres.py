"""PostgreSQL pool that waits for the database instead of crashing at start."""

from __future__ import annotations

import asyncio
import logging
import re
import time

import asyncpg

log = logging.getLogger(__name__)

# Errors that mean "the server is not there (yet)"; anything else (bad password, no database) is fatal.
RETRYABLE_CONNECT_ERRORS = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.TooManyConnectionsError,
)


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 4, wait_s: float = 60.0) -> asyncpg.Pool:
    deadline = time.monotonic() + wait_s
    delay = 0.2
    while True:
        try:
            pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, command_timeout=120)
            assert pool is not None
            return pool
        except RETRYABLE_CONNECT_ERRORS as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("database not reachable, retrying", extra={"error": repr(exc), "retry_in_s": delay})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


_QUERY_PASSWORD = re.compile(r"(?i)([?&]password=)[^&]*")


def redact(dsn: str) -> str:
    """The DSN without its password (user:password@ or ?password=), for logs and errors."""
    dsn = _QUERY_PASSWORD.sub(r"\1***", dsn)
    if "@" not in dsn or "://" not in dsn:
        return dsn
    scheme, rest = dsn.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else f"{scheme}://{user}@{host}"
