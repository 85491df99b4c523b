"""Tickers over the exchange's websocket: every one to LIVE, the latest to RAW every interval.

A ticker is a state, not an event: missing one loses nothing the next one does not say, so a
reconnect needs no REST fill. A ticker ccxt cannot make sense of (it fails the same validation as a
polled one) goes to the DLQ with the frames that carried it; the stream goes on.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from cryptoflow_contracts import Dataset, RawSnapshot
from pydantic import ValidationError

from .metrics import SNAPSHOTS_PUBLISHED
from .session import ExchangeSession, describe_invalid
from .streaming import StreamJob, Updates
from .validation import validate_ticker
from .ws import Frame, StreamClient

# ccxt's watchTicker options per exchange: Binance's default stream (miniTicker) has no bid/ask.
WATCH_PARAMS: dict[str, dict[str, Any]] = {"binance": {"name": "ticker"}}


class TickerStream(StreamJob):
    dataset = Dataset.TICKER

    def __init__(self, session: ExchangeSession, symbol: str, publish_interval_s: float, stall_after_s: float) -> None:
        super().__init__(session, symbol, stall_after_s)
        self.publish_interval_s = publish_interval_s

    async def connected(self, client: StreamClient) -> None:
        params = dict(WATCH_PARAMS.get(self.exchange_id, {}))
        updates = Updates(client, lambda: client.exchange.watch_ticker(self.symbol, dict(params)))
        frames: list[Frame] = []
        last_published = 0.0
        try:
            while True:
                ticker, received = await updates.next_or_stall(self.stall_after_s, "ticker")
                frames.extend(received)
                try:
                    validate_ticker(ticker)
                except (ValidationError, ValueError, TypeError) as exc:
                    await self.dead_letter(f"invalid ticker payload: {describe_invalid(exc)}", frames)
                    frames = []
                    continue
                await self.publish_live(ticker, ticker.get("timestamp"))
                if time.monotonic() - last_published >= self.publish_interval_s:
                    await self._publish(client, ticker, frames)
                    frames, last_published = [], time.monotonic()
        finally:
            await updates.close()

    async def _publish(self, client: StreamClient, ticker: dict[str, Any], frames: list[Frame]) -> None:
        ts = ticker.get("timestamp") if isinstance(ticker.get("timestamp"), int) else time.time_ns() // 1_000_000
        snapshot = RawSnapshot(
            schema_version=2,
            native=[client.native("watchTicker", [self.symbol], self.symbol, frames)],
            dataset=Dataset.TICKER,
            exchange=self.exchange_id,
            symbol=self.symbol,
            fetched_at=datetime.now(UTC),
            request={"symbol": self.symbol, "mode": "stream"},
            payload=ticker,
            first_ts=ts,
            last_ts=ts,
            final=True,
        )
        await self.session.publisher.snapshot(snapshot)
        SNAPSHOTS_PUBLISHED.labels(self.exchange_id, self.symbol, Dataset.TICKER.value).inc()
