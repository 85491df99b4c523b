"""Trades over the exchange's websocket, with nothing lost across reconnects and stalls.

Each connection subscribes first, waits for its first update (so REST and stream overlap), then
runs the polling job's catch-up (`trades.TradesJob`) from the shared checkpoint to now: whatever
happened while no connection was open is fetched by REST. From there the stream's trades follow the
same cursor (last timestamp plus the ids seen at it, `trades.new_trades`), so a trade that both REST
and the stream delivered is published once. Trades go to LIVE as they arrive and to RAW in pages of
at most `batch_max` trades or `batch_ms` of waiting, each with the frames that carried them.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from cryptoflow_contracts import Dataset, RawSnapshot
from pydantic import ValidationError

from .checkpoints import CheckpointStore
from .metrics import FRESHNESS_LAG, NEWEST_RECORD, STREAM_REST_FILLED, TRADES_PUBLISHED
from .session import ExchangeSession, describe_invalid
from .streaming import StallError, StreamJob, Updates
from .trades import PageTrade, TradesJob, new_trades
from .validation import validate_trades
from .ws import CACHE_LIMIT, Frame, StreamClient

log = logging.getLogger(__name__)

# How long a new connection waits for its first trade before filling by REST anyway.
FIRST_UPDATE_WAIT_S = 5.0


class CacheOverflow(Exception):
    """A watch returned as many trades as ccxt's cache holds: older ones may have been dropped."""


def check_overflow(result: list[dict[str, Any]]) -> None:
    """Raise CacheOverflow when an update fills ccxt's cache: the connection ends, and the next one
    fills from the cursor by REST, as after a drop, instead of skipping what the cache lost."""
    if len(result) >= CACHE_LIMIT:
        raise CacheOverflow(f"{len(result)} trades in one read fill ccxt's cache of {CACHE_LIMIT}: some may be lost")


class TradesStream(StreamJob):
    dataset = Dataset.TRADES

    def __init__(
        self,
        session: ExchangeSession,
        symbol: str,
        rest: TradesJob,
        checkpoints: CheckpointStore,
        stall_after_s: float,
        batch_max: int,
        batch_ms: int,
    ) -> None:
        super().__init__(session, symbol, stall_after_s)
        self.rest = rest
        self.checkpoints = checkpoints
        self.batch_max = batch_max
        self.batch_ms = batch_ms
        self._after_ts: int | None = None
        self._seen: set[str] = set()
        self._pending: list[PageTrade] = []
        self._frames: list[Frame] = []

    async def connected(self, client: StreamClient) -> None:
        updates = Updates(client, lambda: client.exchange.watch_trades(self.symbol))
        try:
            first = await updates.next(min(FIRST_UPDATE_WAIT_S, self.stall_after_s))
            filled = await self.rest.catch_up()
            if filled:
                STREAM_REST_FILLED.labels(self.exchange_id, self.symbol, self.dataset.value).inc(filled)
                log.info("stream hole filled by REST", extra={"job": self.name, "trades": filled})
            await self._load_cursor()
            last_update = time.monotonic()
            if first is not None:
                await self._take([first, *updates.ready(self._room())])
            page_deadline: float | None = None
            while True:
                now = time.monotonic()
                if self._pending and page_deadline is None:
                    page_deadline = now + self.batch_ms / 1000
                waits = [last_update + self.stall_after_s - now]
                if page_deadline is not None:
                    waits.append(page_deadline - now)
                update = await updates.next(min(waits))
                if update is not None:
                    last_update = time.monotonic()
                    await self._take([update, *updates.ready(self._room())])
                if len(self._pending) >= self.batch_max or (
                    page_deadline is not None and time.monotonic() >= page_deadline
                ):
                    await self._publish_page(client)
                    page_deadline = None
                if update is None and time.monotonic() - last_update >= self.stall_after_s:
                    raise StallError(f"no trade for {self.stall_after_s:g}s")
        finally:
            await updates.close()
            if self._pending:
                # Written before the next connection's catch-up (which waits for the connection's
                # pages, streaming.PageWriter): the cursor must not run ahead of RAW.
                await self._publish_page(client)

    async def _load_cursor(self) -> None:
        state = await self.checkpoints.state(self.rest.key) or {}
        self._after_ts = state.get("last_ts", self.rest.since_ms)
        self._seen = set(state.get("ids_at_last_ts", []))

    def _room(self) -> int:
        """Updates that may join the page before it reaches `batch_max` (each has a trade or more)."""
        return max(0, self.batch_max - len(self._pending) - 1)

    async def _take(self, updates: list[tuple[list[dict[str, Any]], list[Frame]]]) -> None:
        """Updates into the page, and their new trades to LIVE in one message."""
        live: list[PageTrade] = []
        for result, frames in updates:
            check_overflow(result)
            try:
                rows = list(map(PageTrade, validate_trades(result), result))
            except (ValidationError, ValueError, TypeError):
                rows = await self._valid_trades(result, frames)
            fresh = new_trades(rows, self._after_ts, self._seen)
            if not fresh:
                continue  # trades already published (REST got there first): their frames add nothing
            self._frames.extend(frames)
            self._pending.extend(fresh)
            last_ts = fresh[-1].trade.timestamp
            at_last = {row.trade.id for row in fresh if row.trade.timestamp == last_ts}
            self._seen = (self._seen | at_last) if last_ts == self._after_ts else at_last
            self._after_ts = last_ts
            live += fresh
        if live:
            await self.publish_live([row.raw for row in live], live[-1].trade.timestamp)

    async def _valid_trades(self, result: list[dict[str, Any]], frames: list[Frame]) -> list[PageTrade]:
        """The update's good trades; the bad ones go to the DLQ (with the update's frames)."""
        rows: list[PageTrade] = []
        for raw in result:
            try:
                rows.append(PageTrade(validate_trades([raw])[0], raw))
            except (ValidationError, ValueError, TypeError) as exc:
                await self.dead_letter(f"invalid trade {raw.get('id')!r}: {describe_invalid(exc)}", frames)
        return rows

    async def _publish_page(self, client: StreamClient) -> None:
        trades, frames = self._pending, self._frames
        self._pending, self._frames = [], []
        snapshot = RawSnapshot(
            schema_version=2,
            native=[client.native("watchTrades", [self.symbol], self.symbol, frames)],
            dataset=Dataset.TRADES,
            exchange=self.exchange_id,
            symbol=self.symbol,
            fetched_at=datetime.now(UTC),
            request={"symbol": self.symbol, "mode": "stream"},
            payload=[row.raw for row in trades],
            first_ts=trades[0].trade.timestamp,
            last_ts=trades[-1].trade.timestamp,
            final=True,
        )
        # The cursor as of this page's last trade: the checkpoint once the page is in RAW.
        last_ts, seen = trades[-1].trade.timestamp, sorted(self._seen)

        async def send() -> None:
            await self.session.publisher.snapshot(snapshot)
            await self.checkpoints.put_state(self.rest.key, {"last_ts": last_ts, "ids_at_last_ts": seen})
            TRADES_PUBLISHED.labels(self.exchange_id, self.symbol).inc(len(trades))
            NEWEST_RECORD.labels(self.exchange_id, self.symbol, "trades", "").set(last_ts / 1000)
            FRESHNESS_LAG.labels(self.exchange_id, self.symbol, "trades", "").set(
                max(0.0, time.time() - last_ts / 1000)
            )

        await self.pages.write(send)
