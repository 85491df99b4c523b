"""Binance trades by trade id (`/api/v3/historicalTrades?fromId=`): the REST tail after the trade archives.

Binance's archives list trades by trade id; ccxt's default `fetchTrades` on Binance reads
`aggTrades`, whose ids are aggregate ids, not trade ids. After the archives, REST goes on from the
last archived trade id + 1 with `historicalTrades`: ids are consecutive on Binance, so the two
join with no gap and no overlap, and the same trade has the same id (and values) from either.
The checkpoint is the trades job's (`last_ts`, `ids_at_last_ts`) plus `last_id`, so a restart
resumes from the id. Without a `last_id` (no archive reached `since`), the first trade at or
after `since` is found with one `aggTrades` call (an aggregate names its first trade, `f`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptoflow_contracts import Dataset, RawSnapshot

from .checkpoints import CheckpointStore, checkpoint_key
from .metrics import FRESHNESS_LAG, NEWEST_RECORD, TRADES_PUBLISHED
from .native import UnifiedCall
from .session import ExchangeSession
from .trades import trades_of
from .validation import validate_trades

log = logging.getLogger(__name__)

HISTORICAL_TRADES = "publicGetHistoricalTrades"


@dataclass
class TradesByIdJob:
    session: ExchangeSession
    symbol: str
    since_ms: int | None
    page_limit: int
    checkpoints: CheckpointStore
    until_ms: int | None = None  # a backfill's end (inclusive): no trade after it is published
    checkpoint_prefix: str = ""  # a backfill's own checkpoints (`backfill.<from>.<to>.`)

    @property
    def key(self) -> str:
        # The trades job's key: one trades checkpoint per exchange·symbol, whichever way it pages.
        return self.checkpoint_prefix + checkpoint_key(self.session.exchange_id, self.symbol, Dataset.TRADES, None)

    @property
    def name(self) -> str:
        return f"{self.session.exchange_id} {self.symbol} trades by id"

    async def last_id(self) -> int | None:
        state = await self.checkpoints.state(self.key)
        value = state.get("last_id") if state else None
        return int(value) if value is not None else None

    async def catch_up(self, now_ms: Callable[[], int] = lambda: int(time.time() * 1000)) -> int:
        last_id = await self.last_id()
        from_id = last_id + 1 if last_id is not None else await self._first_id_since()
        if from_id is None:
            return 0  # no trade at or after `since` yet
        published = 0
        while True:
            params: dict[str, Any] = {"fetchTradesMethod": HISTORICAL_TRADES, "fromId": from_id}
            page = await self.session.fetch(
                Dataset.TRADES,
                self.symbol,
                UnifiedCall("fetchTrades", (self.symbol, None, self.page_limit, params)),
                validate_trades,
                endpoint="historicalTrades",
            )
            rows = sorted(
                (row for row in trades_of(page) if row.trade.id.isdigit() and int(row.trade.id) >= from_id),
                key=lambda row: int(row.trade.id),
            )
            past_end = self.until_ms is not None and any(row.trade.timestamp > self.until_ms for row in rows)
            if self.until_ms is not None:
                rows = [row for row in rows if row.trade.timestamp <= self.until_ms]
            if not rows:
                break
            snapshot = RawSnapshot(
                schema_version=2,
                native=[page.native],
                dataset=Dataset.TRADES,
                exchange=self.session.exchange_id,
                symbol=self.symbol,
                fetched_at=datetime.now(UTC),
                request={"symbol": self.symbol, "fromId": from_id, "limit": self.page_limit},
                payload=[row.raw for row in rows],
                first_ts=min(row.trade.timestamp for row in rows),
                last_ts=max(row.trade.timestamp for row in rows),
                final=True,
            )
            await self.session.publisher.snapshot(snapshot)
            last = rows[-1].trade
            from_id = int(last.id) + 1
            at_last = sorted(row.trade.id for row in rows if row.trade.timestamp == last.timestamp)
            await self.checkpoints.put_state(
                self.key, {"last_id": int(last.id), "last_ts": last.timestamp, "ids_at_last_ts": at_last}
            )
            published += len(rows)
            TRADES_PUBLISHED.labels(self.session.exchange_id, self.symbol).inc(len(rows))
            NEWEST_RECORD.labels(self.session.exchange_id, self.symbol, "trades", "").set(last.timestamp / 1000)
            FRESHNESS_LAG.labels(self.session.exchange_id, self.symbol, "trades", "").set(
                max(0.0, (now_ms() - last.timestamp) / 1000)
            )
            if len(page.parsed) < self.page_limit or past_end:
                break
        return published

    async def _first_id_since(self) -> int | None:
        """The id of the first trade at or after `since` (the newest trade's when unset)."""
        page = await self.session.fetch(
            Dataset.TRADES, self.symbol, UnifiedCall("fetchTrades", (self.symbol, self.since_ms, 1)), validate_trades
        )
        if not page.result:
            return None
        info = page.result[0].get("info") or {}
        first = info.get("f", page.result[0].get("id"))
        log.info("trades by id: first trade since the start", extra={"job": self.name, "from_id": first})
        return int(first) if first is not None else None
