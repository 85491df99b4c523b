"""The loader's PostgreSQL: pool, migrations at start, and waiting out an outage.

When a load fails and a fresh connection cannot be made either, the database is down (or
restarting): the message is not nak'ed — that would spend its deliveries and dead-letter good
batches during a long outage — but held (`in_progress` keeps JetStream from redelivering it)
while we wait, and loaded once the database is back. When the loader is stopped meanwhile, a
held message is released (nak'ed at once, `Released`) for the next loader instead of keeping the
shutdown waiting for a database that may not come back.

An operation is watched while it runs. asyncpg can wait forever on a connection that is already
gone: a COPY whose writes were paused (the server reading slower than we send) when the server
died waits for a resume that never comes, and no command_timeout covers that wait. So a running
operation whose connection closes is cancelled and counts as a lost connection (held as above,
or run again at once on a new connection when the database is still there), and a long
operation keeps its message alive meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
from cryptoflow_runtime import PoisonMessageError, Released
from cryptoflow_runtime.postgres import RETRYABLE_CONNECT_ERRORS, create_pool, redact

from .config import WarehouseLoaderSettings
from .migrations import migrate, require_head

log = logging.getLogger(__name__)
T = TypeVar("T")

PROBE_TIMEOUT_S = 5.0
MAX_WAIT_STEP_S = 5.0
PROBE_INTERVAL_S = 5.0
# A running operation: how often its connection is checked, and at most how often its message is
# kept alive (at least three times per ack wait).
WATCH_INTERVAL_S = 0.5
KEEPALIVE_INTERVAL_S = 10.0
# How long a cancelled operation may take to unwind before its connection is terminated.
CANCEL_GRACE_S = 5.0
# Lost connections in a row, with the database reachable each time, before the error is raised.
MAX_LOST_CONNECTIONS = 3


class ConnectionLostError(Exception):
    """The connection an operation ran on closed under it: the connection failed, not the operation."""


class Warehouse:
    def __init__(self, settings: WarehouseLoaderSettings) -> None:
        self.settings = settings
        self._pool: asyncpg.Pool | None = None
        self.applied_migrations: list[str] = []
        # Last seen state of the database, for readiness: set by every probe and every operation.
        self.up = False
        self._watch: asyncio.Task[None] | None = None
        self._keepalive_s = min(KEEPALIVE_INTERVAL_S, settings.ack_wait_s / 3)
        # Set when the service stops: operations waiting out an outage let their messages go.
        self._stopping = asyncio.Event()

    async def release_held(self) -> None:
        """The service is stopping: operations waiting for the database give up (`Released`)."""
        self._stopping.set()

    def is_up(self) -> bool:
        return self.up

    async def watch(self, interval_s: float = PROBE_INTERVAL_S) -> None:
        """Probe the database every `interval_s` so readiness follows it while nothing is loaded."""
        while True:
            await asyncio.sleep(interval_s)
            await self.reachable()

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "pool not open"
        return self._pool

    async def open(self) -> None:
        url = self.settings.database_url
        log.info("connecting to warehouse", extra={"database": redact(url)})
        self._pool = await create_pool(url, max_size=self.settings.pool_size)
        if self.settings.migrate:
            self.applied_migrations = await asyncio.to_thread(migrate, url)
            log.info("warehouse schema at head", extra={"applied": self.applied_migrations})
        else:
            await asyncio.to_thread(require_head, url)
        self.up = True
        self._watch = asyncio.create_task(self.watch())

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        if self._pool is not None:
            await self._pool.close()

    async def reachable(self) -> bool:
        """Can a new connection be made and used right now? (Not from the pool: its connections
        may be stale after a restart.)"""
        self.up = await self._probe()
        return self.up

    async def _probe(self) -> bool:
        try:
            conn = await asyncpg.connect(self.settings.database_url, timeout=PROBE_TIMEOUT_S)
        except (*RETRYABLE_CONNECT_ERRORS, asyncpg.PostgresConnectionError, asyncpg.InterfaceError):
            return False
        try:
            await asyncio.wait_for(conn.fetchval("SELECT 1"), PROBE_TIMEOUT_S)
            return True
        except (*RETRYABLE_CONNECT_ERRORS, asyncpg.PostgresConnectionError, asyncpg.InterfaceError):
            return False
        finally:
            conn.terminate()

    async def wait_until_reachable(self, keepalive: Callable[[], Awaitable[None]]) -> None:
        delay = 0.2
        while not await self.reachable():
            if self._stopping.is_set():
                raise Released("the warehouse is unreachable and the loader is stopping")
            await keepalive()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            delay = min(delay * 2, MAX_WAIT_STEP_S)
        # Every pooled connection predates the outage: replace them rather than fail on each.
        await self.pool.expire_connections()
        log.info("warehouse reachable again")

    async def run(
        self,
        operation: Callable[[asyncpg.Connection], Awaitable[T]],
        keepalive: Callable[[], Awaitable[None]],
    ) -> T:
        """Run `operation` on a pooled connection; through an outage, wait and run it again.

        An error while the database is reachable is the operation's own and is raised, unless its
        connection was lost (then it runs again on a new one, a few times at most).
        """
        lost = 0
        while True:
            try:
                result = await self._attempt(operation, keepalive)
                self.up = True
                return result
            except PoisonMessageError:
                raise  # the operation's verdict on its input, not the database's health
            except Exception as exc:
                if await self.reachable():
                    if not isinstance(exc, ConnectionLostError) or lost >= MAX_LOST_CONNECTIONS:
                        raise
                    lost += 1
                    log.warning("warehouse connection lost; running the operation again", extra={"error": repr(exc)})
                    await self.pool.expire_connections()
                    continue
                log.warning("warehouse unreachable; holding the message until it is back", extra={"error": repr(exc)})
                await self.wait_until_reachable(keepalive)

    async def _attempt(
        self,
        operation: Callable[[asyncpg.Connection], Awaitable[T]],
        keepalive: Callable[[], Awaitable[None]],
    ) -> T:
        """One run of `operation`, watched: see the module's docstring."""
        async with self.pool.acquire() as conn:
            task: asyncio.Future[T] = asyncio.ensure_future(operation(conn))
            # Its outcome is read below, or dropped on purpose once it has been cancelled.
            task.add_done_callback(lambda done: done.cancelled() or done.exception())
            try:
                next_keepalive = time.monotonic() + self._keepalive_s
                while True:
                    finished, _ = await asyncio.wait({task}, timeout=WATCH_INTERVAL_S)
                    if finished:
                        return task.result()
                    if _closed(conn):
                        raise ConnectionLostError("warehouse connection lost while an operation ran on it")
                    if time.monotonic() >= next_keepalive:
                        await keepalive()
                        next_keepalive = time.monotonic() + self._keepalive_s
            except PoisonMessageError:
                raise
            except Exception as exc:
                if not isinstance(exc, ConnectionLostError) and _closed(conn):
                    raise ConnectionLostError(f"warehouse connection lost: {exc!r}") from exc
                raise
            finally:
                if not task.done():
                    task.cancel()
                    await asyncio.wait({task}, timeout=CANCEL_GRACE_S)
                    if not task.done():
                        with contextlib.suppress(asyncpg.InterfaceError):  # already released: closed
                            conn.terminate()
                        await asyncio.wait({task}, timeout=CANCEL_GRACE_S)


def _closed(conn: asyncpg.Connection) -> bool:
    """Whether a pooled connection closed under its user (the pool then takes it back at once,
    and the proxy refuses every call)."""
    try:
        return bool(conn.is_closed())
    except asyncpg.InterfaceError:
        return True
