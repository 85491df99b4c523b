"""Candles over the exchange's websocket: only a closed candle is final, and none is skipped.

Each connection subscribes, then runs the polling job's catch-up (`ohlcv.OhlcvJob`) from the shared
checkpoint, so every candle that closed while no connection was open comes by REST. From there a
candle the exchange marks closed (Binance `x`, Bybit `confirm`, Gate `w`; for an exchange that
sends no flag, a candle is closed once the next one has begun) is published final when it is the
next one the checkpoint expects; a later one means the stream skipped a candle, so REST fills
the interval first. Every update goes to LIVE (`final: false` while the candle forms); with
`publish_forming` the forming candle goes to RAW as well (`final: false`), replaced downstream by
the closed one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from cryptoflow_contracts import Dataset, RawSnapshot, timeframe_ms
from cryptoflow_native import candle_closed_flags, stream_ohlcv_base_volumes

from .checkpoints import CheckpointStore
from .metrics import CANDLES_PUBLISHED, FRESHNESS_LAG, NEWEST_RECORD, STREAM_REST_FILLED
from .ohlcv import OhlcvJob, wall_clock_ms
from .session import ExchangeSession
from .streaming import StreamJob, Updates
from .ws import Frame, StreamClient

log = logging.getLogger(__name__)

FIRST_UPDATE_WAIT_S = 5.0
# Frames kept for the next page: a day candle's forming updates need not all be bronze.
MAX_FRAMES_KEPT = 5_000


class CandlesStream(StreamJob):
    dataset = Dataset.OHLCV

    def __init__(
        self,
        session: ExchangeSession,
        symbol: str,
        timeframe: str,
        rest: OhlcvJob,
        checkpoints: CheckpointStore,
        stall_after_s: float,
        publish_forming: bool,
        clock: Callable[[], int] = wall_clock_ms,
    ) -> None:
        super().__init__(session, symbol, stall_after_s)
        self.clock = clock  # what "closed" means for the REST fill: the exchange's time
        self.timeframe = timeframe
        self.tf_ms = timeframe_ms(timeframe)
        self.rest = rest
        self.checkpoints = checkpoints
        self.publish_forming = publish_forming
        self._next_since: int | None = None
        self._forming: list[Any] | None = None  # the newest candle not known closed
        self._frames: list[Frame] = []

    @property
    def name(self) -> str:
        return f"{self.exchange_id} {self.symbol} ohlcv {self.timeframe} stream"

    async def connected(self, client: StreamClient) -> None:
        updates = Updates(client, lambda: client.exchange.watch_ohlcv(self.symbol, self.timeframe))
        try:
            first = await updates.next(min(FIRST_UPDATE_WAIT_S, self.stall_after_s))
            await self._fill()
            if first is not None:
                await self._take(client, *first)
            while True:
                await self._take(client, *await updates.next_or_stall(self.stall_after_s, "candle update"))
        finally:
            await updates.close()

    async def _fill(self) -> None:
        filled = await self.rest.catch_up(now_ms=self.clock)
        if filled:
            STREAM_REST_FILLED.labels(self.exchange_id, self.symbol, self.dataset.value).inc(filled)
            log.info("stream hole filled by REST", extra={"job": self.name, "candles": filled})
        self._next_since = await self.checkpoints.next_since(self.rest.key)

    async def _take(self, client: StreamClient, candles: list[list[Any]], frames: list[Frame]) -> None:
        self._frames = (self._frames + frames)[-MAX_FRAMES_KEPT:]
        texts = [frame.text for frame in frames]
        flags = candle_closed_flags(client.exchange.id, texts)
        # ccxt's stream parse takes Gate's quote volume where its REST parse takes the base volume.
        base_volumes = stream_ohlcv_base_volumes(client.exchange.id, texts)
        for row in sorted(candles, key=lambda row: row[0]):
            candle = list(row)
            ts = int(candle[0])
            if ts in base_volumes:
                candle[5] = base_volumes[ts]
            if self._forming is not None and ts > self._forming[0] and self._forming[0] not in flags:
                # No flag from the exchange for it: a newer candle has begun, so it has closed.
                await self._closed(client, self._forming)
            closed = flags.get(ts, False)
            await self.publish_live(candle, ts, self.timeframe, final=closed)
            if closed:
                self._forming = None
                await self._closed(client, candle)
            else:
                self._forming = candle
                if self.publish_forming:
                    await self._publish(client, [candle], final=False)

    async def _closed(self, client: StreamClient, candle: list[Any]) -> None:
        ts = int(candle[0])
        if self._next_since is not None and ts > self._next_since:
            # The stream skipped a candle: REST fetches the interval (this one too, once REST has it).
            log.info("stream skipped candles, filling by REST", extra={"job": self.name, "from": self._next_since})
            await self._fill()
        if self._next_since is not None and ts != self._next_since:
            # Published already (by REST, or a repeated close); or still missing before it, which
            # the next fill fetches together with this one.
            return
        await self._publish(client, [candle], final=True)
        self._next_since = ts + self.tf_ms
        await self.checkpoints.advance(self.rest.key, ts + self.tf_ms, ts)
        CANDLES_PUBLISHED.labels(self.exchange_id, self.symbol, self.timeframe).inc()
        NEWEST_RECORD.labels(self.exchange_id, self.symbol, "ohlcv", self.timeframe).set((ts + self.tf_ms) / 1000)
        FRESHNESS_LAG.labels(self.exchange_id, self.symbol, "ohlcv", self.timeframe).set(
            max(0.0, time.time() - (ts + self.tf_ms) / 1000)
        )

    async def _publish(self, client: StreamClient, candles: list[list[Any]], final: bool) -> None:
        frames, self._frames = self._frames, []
        snapshot = RawSnapshot(
            schema_version=2,
            native=[client.native("watchOHLCV", [self.symbol, self.timeframe], self.symbol, frames)],
            dataset=Dataset.OHLCV,
            exchange=self.exchange_id,
            symbol=self.symbol,
            timeframe=self.timeframe,
            fetched_at=datetime.now(UTC),
            request={"symbol": self.symbol, "timeframe": self.timeframe, "mode": "stream"},
            payload=candles,
            first_ts=int(candles[0][0]),
            last_ts=int(candles[-1][0]),
            final=final,
        )
        await self.session.publisher.snapshot(snapshot)
