"""Ticker and order-book polling: each poll is one snapshot of the market's current state."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptoflow_contracts import Dataset, NativeCall, RawSnapshot

from .metrics import FRESHNESS_LAG, NEWEST_RECORD, SNAPSHOTS_PUBLISHED
from .native import UnifiedCall
from .session import ExchangeSession
from .validation import validate_order_book, validate_ticker

log = logging.getLogger(__name__)


@dataclass
class TickerJob:
    session: ExchangeSession
    symbol: str

    @property
    def name(self) -> str:
        return f"{self.session.exchange_id} {self.symbol} ticker"

    async def catch_up(self, now_ms: Callable[[], int] = lambda: int(time.time() * 1000)) -> int:
        page = await self.session.fetch(
            Dataset.TICKER, self.symbol, UnifiedCall("fetchTicker", (self.symbol,)), validate_ticker
        )
        request = {"symbol": self.symbol}
        await publish_state(
            self.session,
            Dataset.TICKER,
            self.symbol,
            page.result,
            page.parsed.timestamp,
            request,
            now_ms(),
            page.native,
        )
        return 1


@dataclass
class OrderBookJob:
    session: ExchangeSession
    symbol: str
    depth: int

    @property
    def name(self) -> str:
        return f"{self.session.exchange_id} {self.symbol} orderbook"

    async def catch_up(self, now_ms: Callable[[], int] = lambda: int(time.time() * 1000)) -> int:
        page = await self.session.fetch(
            Dataset.ORDERBOOK,
            self.symbol,
            UnifiedCall("fetchOrderBook", (self.symbol, self.depth)),
            validate_order_book,
        )
        # Some exchanges return more levels than asked (fixed depth steps): keep the configured top N.
        raw = page.result
        book = {**raw, "bids": raw["bids"][: self.depth], "asks": raw["asks"][: self.depth]}
        request = {"symbol": self.symbol, "limit": self.depth}
        await publish_state(
            self.session, Dataset.ORDERBOOK, self.symbol, book, page.parsed.timestamp, request, now_ms(), page.native
        )
        return 1


async def publish_state(
    session: ExchangeSession,
    dataset: Dataset,
    symbol: str,
    payload: dict[str, Any],
    timestamp: int | None,
    request: dict[str, Any],
    now: int,
    native: NativeCall,
) -> None:
    """Publish one state snapshot; `payload` is ccxt's result, `timestamp` its parsed time."""
    fetched_at = datetime.now(UTC)
    # Binance's REST order book has no timestamp: the fetch time is when we saw that state.
    ts = timestamp or int(fetched_at.timestamp() * 1000)
    snapshot = RawSnapshot(
        schema_version=2,
        native=[native],
        dataset=dataset,
        exchange=session.exchange_id,
        symbol=symbol,
        fetched_at=fetched_at,
        request=request,
        payload=payload,
        first_ts=ts,
        last_ts=ts,
        final=True,
    )
    await session.publisher.snapshot(snapshot)
    SNAPSHOTS_PUBLISHED.labels(session.exchange_id, symbol, dataset.value).inc()
    NEWEST_RECORD.labels(session.exchange_id, symbol, dataset.value, "").set(ts / 1000)
    FRESHNESS_LAG.labels(session.exchange_id, symbol, dataset.value, "").set(max(0.0, (now - ts) / 1000))
