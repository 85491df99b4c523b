"""What every stream job shares: its connection's lifetime, reconnects, the stall watchdog, LIVE.

A stream job (`mode: stream` in a jobs file) runs `run()` for as long as it owns its lease: it
opens its own ccxt pro connection (`ws.StreamClient`), subscribes, fills by REST whatever the
stream cannot have delivered (from its checkpoint to now, for trades and candles), then turns the
exchange's updates into LIVE updates at once and RawSnapshot pages for the lake (decision 0043).

Whatever ends a connection — the exchange closing it, a network error, no update for
`stall_after_s` (the watchdog), an order book out of sequence — is counted by reason and logged,
and the job opens a new connection, which fills the hole by REST before it goes on. Nothing the
stream missed is left missing: the next connection starts from the checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from cryptoflow_contracts import Dataset, DeadLetter, LiveUpdate, Stage
from cryptoflow_runtime.tasks import cancel_and_wait

from .leases import LeaseLostError
from .metrics import LIVE_PUBLISHED, PAGES_DEAD_LETTERED, STREAM_LAST_MESSAGE, STREAM_MESSAGES, STREAM_RECONNECTS
from .session import ExchangeSession
from .ws import Frame, StreamClient

log = logging.getLogger(__name__)

T = TypeVar("T")

RECONNECT_BACKOFF_S = (0.1, 0.5, 1.0, 2.0, 5.0)
# A connection that lived this long was healthy: the next failure starts the backoff over.
HEALTHY_AFTER_S = 30.0
CLOSE_TIMEOUT_S = 5.0


class StallError(Exception):
    """No update for longer than the job's `stall_after_s`: the feed is silent, not the market."""


class ResyncNeeded(Exception):
    """The order book can no longer be trusted (a sequence gap, a crossed book): sync it again."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class StreamJob(ABC):
    """One exchange·symbol·dataset(·timeframe) streamed over its own websocket connection."""

    dataset: Dataset

    def __init__(self, session: ExchangeSession, symbol: str, stall_after_s: float, timeout_ms: int = 10_000) -> None:
        self.session = session
        self.symbol = symbol
        self.stall_after_s = stall_after_s
        self.timeout_ms = timeout_ms
        self.connections = 0
        # Read each frame as received, before ccxt handles it (the books check sequence numbers).
        self.frame_checks: list[Callable[[Frame], None]] = []
        self._dead_letters: set[asyncio.Task[None]] = set()
        # The connection's RAW pages (a new writer per connection, see `_connect_forever`).
        self.pages = PageWriter()

    @property
    def name(self) -> str:
        return f"{self.session.exchange_id} {self.symbol} {self.dataset.value} stream"

    @property
    def exchange_id(self) -> str:
        return self.session.exchange_id

    def new_client(self) -> StreamClient:
        client = StreamClient(self.exchange_id, self.session.base_url, self.session.exchange.markets, self.timeout_ms)
        messages = STREAM_MESSAGES.labels(self.exchange_id, self.symbol, self.dataset.value)
        last = STREAM_LAST_MESSAGE.labels(self.exchange_id, self.symbol, self.dataset.value)

        def counted(frame: Frame) -> None:
            messages.inc()
            last.set(frame.received_ms / 1000)
            for check in self.frame_checks:
                check(frame)

        client.on_frame = counted
        client.on_bad_frame = self._bad_frame
        return client

    def _bad_frame(self, frame: Frame, exc: Exception) -> None:
        reason = f"ccxt could not parse a {self.dataset.value} frame: {type(exc).__name__}: {str(exc)[:300]}"
        task = asyncio.create_task(self.dead_letter(reason, [frame]))
        self._dead_letters.add(task)
        task.add_done_callback(self._dead_letters.discard)

    @abstractmethod
    async def connected(self, client: StreamClient) -> None:
        """Run one connection until it fails (it never returns normally)."""

    async def run(self) -> None:
        """Stream until cancelled, opening a new connection whenever one fails."""
        try:
            await self._connect_forever()
        finally:
            # Handed over or stopped: this replica no longer speaks for the stream's freshness.
            with contextlib.suppress(KeyError):
                STREAM_LAST_MESSAGE.remove(self.exchange_id, self.symbol, self.dataset.value)

    async def _connect_forever(self) -> None:
        failures = 0
        while True:
            client = self.new_client()
            self.connections += 1
            opened = time.monotonic()
            pages = self.pages = PageWriter()
            try:
                try:
                    await self.connected(client)
                finally:
                    # The connection's pages are in RAW before the next one fills from the checkpoint.
                    await pages.close()
            except asyncio.CancelledError:
                raise
            except LeaseLostError as exc:
                log.info("lease too short, waiting", extra={"job": self.name, "error": str(exc)})
            except Exception as exc:
                reason = self.reconnect_reason(exc)
                STREAM_RECONNECTS.labels(self.exchange_id, self.symbol, self.dataset.value, reason).inc()
                log.warning(
                    "stream connection ended, reconnecting",
                    extra={"job": self.name, "reason": reason, "error": repr(exc)[:500]},
                )
            finally:
                # Bounded: a close handshake the exchange never answers must not freeze the job.
                with contextlib.suppress(Exception):
                    await asyncio.shield(asyncio.wait_for(client.close(), CLOSE_TIMEOUT_S))
            failures = 0 if time.monotonic() - opened > HEALTHY_AFTER_S else failures + 1
            await asyncio.sleep(RECONNECT_BACKOFF_S[min(failures, len(RECONNECT_BACKOFF_S) - 1)])

    def reconnect_reason(self, exc: Exception) -> str:
        if isinstance(exc, StallError):
            return "stall"
        if isinstance(exc, ResyncNeeded):
            return f"resync_{exc.reason}"
        return type(exc).__name__

    async def dead_letter(self, reason: str, frames: list[Frame]) -> None:
        """An update ccxt made of these frames failed validation: the frames go to the DLQ with the
        reason, and the stream goes on (a bad message is not a reason to lose the connection)."""
        PAGES_DEAD_LETTERED.labels(self.exchange_id, self.dataset.value, "InvalidStreamUpdate").inc()
        log.warning("invalid stream update dead-lettered", extra={"job": self.name, "reason": reason})
        await self.session.publisher.dead_letter(
            DeadLetter(
                stage=Stage.EXTRACTOR,
                dataset=self.dataset,
                reason=reason,
                error_type="InvalidStreamUpdate",
                payload="\n".join(frame.text for frame in frames)[:100_000],
                details={"exchange": self.exchange_id, "symbol": self.symbol, "mode": "stream"},
            )
        )

    async def publish_live(
        self, data: Any, exchange_ts: int | None, timeframe: str | None = None, final: bool = True
    ) -> None:
        publish = self.session.publisher.live
        if publish is None:
            return
        await publish(
            LiveUpdate(
                dataset=self.dataset,
                exchange=self.exchange_id,
                symbol=self.symbol,
                timeframe=timeframe,
                exchange_ts=exchange_ts,
                received_at=datetime.now(UTC),
                final=final,
                data=data,
            )
        )
        LIVE_PUBLISHED.labels(self.exchange_id, self.dataset.value).inc()


class PageWriter:
    """A connection's RAW pages, published in order by a task of their own.

    The job goes on taking updates (and sending them to LIVE) while a page waits for JetStream's
    ack and its checkpoint: a page's round trips no longer hold the next update back (they were
    most of the LIVE latency's tail). At most `max_waiting` pages wait; beyond that `write` waits,
    so RAW's pace bounds the job's memory. The first failure stops the writer: the pages after it
    are dropped unpublished, so no checkpoint passes a page that is not in RAW; `write` and `close`
    raise it, and the next connection fills from the checkpoint by REST, as after any failure.
    """

    def __init__(self, max_waiting: int = 8) -> None:
        self._queue: asyncio.Queue[Callable[[], Awaitable[None]]] = asyncio.Queue(max_waiting)
        self._failed: Exception | None = None
        self._task: asyncio.Task[None] | None = None

    async def write(self, page: Callable[[], Awaitable[None]]) -> None:
        """Queue `page` (publishes one RAW page and its checkpoint) after those written before."""
        if self._failed is not None:
            raise self._failed
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        await self._queue.put(page)

    async def _run(self) -> None:
        while True:
            page = await self._queue.get()
            try:
                if self._failed is None:
                    await page()
            except Exception as exc:
                self._failed = exc
            finally:
                self._queue.task_done()

    async def close(self) -> None:
        """Every page written is published, or the first failure is raised."""
        if self._task is not None:
            try:
                await self._queue.join()
            finally:
                await cancel_and_wait(self._task)
        if self._failed is not None:
            raise self._failed


class Updates:
    """A watch loop's updates, each with the frames that carried it, for the job to take in order.

    ccxt pro resolves a watcher when a frame is handled; the rest of `watch_*` and the frames'
    hand-over run without yielding, so the frames taken right after a `watch_*` returns are exactly
    those whose records it returned: a page's bronze and its records always match.
    """

    def __init__(self, client: StreamClient, watch: Callable[[], Awaitable[T]]) -> None:
        self._queue: asyncio.Queue[tuple[Any, list[Frame]] | BaseException] = asyncio.Queue()
        self._failed: BaseException | None = None
        self._task = asyncio.create_task(self._loop(client, watch))

    async def _loop(self, client: StreamClient, watch: Callable[[], Awaitable[Any]]) -> None:
        try:
            while True:
                result = await watch()
                self._queue.put_nowait((result, client.take_frames()))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._queue.put_nowait(exc)

    async def next(self, timeout_s: float) -> tuple[Any, list[Frame]] | None:
        """The next update, or None after `timeout_s` without one; re-raises the watcher's error."""
        if self._failed is not None:
            raise self._failed
        try:
            # Not wait_for: on Python 3.11 it returns the update when a cancel lands as the update
            # arrives (gh-86296), and a stopped job would go on streaming.
            async with asyncio.timeout(max(timeout_s, 0.0)):
                item = await self._queue.get()
        except TimeoutError:
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    async def next_or_stall(self, stall_after_s: float, what: str) -> tuple[Any, list[Frame]]:
        """The next update; StallError (the watchdog) when none comes within `stall_after_s`."""
        update = await self.next(stall_after_s)
        if update is None:
            raise StallError(f"no {what} for {stall_after_s:g}s")
        return update

    def ready(self, limit: int) -> list[tuple[Any, list[Frame]]]:
        """The updates already waiting, in order, without waiting for more: a job that fell behind
        takes them together (one LIVE message for many updates) and so catches up; one that keeps
        up finds none, and adds no delay. At most `limit` (a page's bound). A watcher's error comes
        with the next `next()`."""
        items: list[tuple[Any, list[Frame]]] = []
        while self._failed is None and len(items) < limit and not self._queue.empty():
            item = self._queue.get_nowait()
            if isinstance(item, BaseException):
                self._failed = item
            else:
                items.append(item)
        return items

    async def close(self) -> None:
        await cancel_and_wait(self._task)
