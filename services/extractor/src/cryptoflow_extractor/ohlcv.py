"""OHLCV polling: page forward from the checkpoint, publish closed candles only."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import ccxt.async_support as ccxt
from cryptoflow_contracts import Dataset, RawSnapshot, timeframe_ms

from .checkpoints import CheckpointStore, checkpoint_key
from .metrics import CANDLES_PUBLISHED, FRESHNESS_LAG, REQUESTS

log = logging.getLogger(__name__)

Publish = Callable[[RawSnapshot], Awaitable[None]]


def closed_candles(candles: list[list[Any]], tf_ms: int, now_ms: int) -> list[list[Any]]:
    """Candles whose interval has ended; the forming one is dropped, to be fetched once closed."""
    return [candle for candle in candles if isinstance(candle[0], int) and candle[0] + tf_ms <= now_ms]


@dataclass
class OhlcvJob:
    exchange: ccxt.Exchange
    exchange_id: str
    symbol: str
    timeframe: str
    since_ms: int
    until_ms: int | None
    page_limit: int
    checkpoints: CheckpointStore
    publish: Publish

    @property
    def key(self) -> str:
        return checkpoint_key(self.exchange_id, self.symbol, Dataset.OHLCV, self.timeframe)

    async def catch_up(self, now_ms: Callable[[], int] = lambda: int(time.time() * 1000)) -> int:
        """Publish every closed candle from the checkpoint to now; returns how many."""
        tf_ms = timeframe_ms(self.timeframe)
        since = await self.checkpoints.next_since(self.key)
        if since is None:
            since = self.since_ms
        published = 0
        while True:
            if self.until_ms is not None and since > self.until_ms:
                break
            request = {"symbol": self.symbol, "timeframe": self.timeframe, "since": since, "limit": self.page_limit}
            try:
                page = await self.exchange.fetch_ohlcv(self.symbol, self.timeframe, since, self.page_limit)
            except Exception as exc:
                REQUESTS.labels(self.exchange_id, "ohlcv", type(exc).__name__).inc()
                raise
            REQUESTS.labels(self.exchange_id, "ohlcv", "ok").inc()
            fetched_at = datetime.now(UTC)
            candles = closed_candles(page, tf_ms, now_ms())
            if self.until_ms is not None:
                candles = [c for c in candles if c[0] <= self.until_ms]
            if not candles:
                break
            snapshot = RawSnapshot(
                dataset=Dataset.OHLCV,
                exchange=self.exchange_id,
                symbol=self.symbol,
                timeframe=self.timeframe,
                fetched_at=fetched_at,
                request=request,
                payload=candles,
                first_ts=candles[0][0],
                last_ts=candles[-1][0],
                final=True,
            )
            # Publish before the checkpoint moves: a crash in between republishes the same
            # event (same event_id), which JetStream's duplicate window drops.
            await self.publish(snapshot)
            last_ts = int(candles[-1][0])
            await self.checkpoints.advance(self.key, last_ts + tf_ms, last_ts)
            published += len(candles)
            CANDLES_PUBLISHED.labels(self.exchange_id, self.symbol, self.timeframe).inc(len(candles))
            FRESHNESS_LAG.labels(self.exchange_id, self.symbol, "ohlcv", self.timeframe).set(
                max(0.0, (now_ms() - (last_ts + tf_ms)) / 1000)
            )
            log.info(
                "published candles",
                extra={
                    "symbol": self.symbol,
                    "timeframe": self.timeframe,
                    "candles": len(candles),
                    "event_id": snapshot.event_id,
                    "first_ts": snapshot.first_ts,
                    "last_ts": last_ts,
                },
            )
            since = last_ts + tf_ms
            if len(page) < self.page_limit:
                break
        return published
