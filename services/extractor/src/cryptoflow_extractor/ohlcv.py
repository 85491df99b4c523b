"""OHLCV polling: page forward from the checkpoint, publish closed candles, record known gaps."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from cryptoflow_contracts import Dataset, KnownGap, NativeCall, RawSnapshot, timeframe_ms

from .checkpoints import CheckpointStore, checkpoint_key
from .gaps import holes
from .metrics import CANDLES_PUBLISHED, FRESHNESS_LAG, KNOWN_GAPS, NEWEST_RECORD
from .native import UnifiedCall
from .profiles import profile
from .session import ExchangeSession, Page
from .validation import OhlcvRow, validate_ohlcv

log = logging.getLogger(__name__)


class Candle(NamedTuple):
    """One candle of a page: its typed row, and ccxt's row as returned (what is published)."""

    row: OhlcvRow
    raw: list[Any]

    @property
    def ts(self) -> int:
        return self.row.ts


def candles_of(page: Page[list[OhlcvRow]]) -> list[Candle]:
    return list(map(Candle, page.parsed, page.result))


def closed_candles(candles: list[Candle], tf_ms: int, now_ms: int) -> list[Candle]:
    """Candles whose interval has ended; the forming one is dropped, to be fetched once closed."""
    return [candle for candle in candles if candle.ts + tf_ms <= now_ms]


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class OhlcvJob:
    session: ExchangeSession
    symbol: str
    timeframe: str
    since_ms: int
    until_ms: int | None
    page_limit: int
    checkpoints: CheckpointStore
    checkpoint_prefix: str = ""

    @property
    def key(self) -> str:
        return self.checkpoint_prefix + checkpoint_key(
            self.session.exchange_id, self.symbol, Dataset.OHLCV, self.timeframe
        )

    @property
    def name(self) -> str:
        return f"{self.session.exchange_id} {self.symbol} ohlcv {self.timeframe}"

    async def _page(self, since: int, limit: int, until: int | None = None) -> tuple[list[Candle], NativeCall]:
        params = {"until": until} if until is not None else {}
        page = await self.session.fetch(
            Dataset.OHLCV,
            self.symbol,
            UnifiedCall("fetchOHLCV", (self.symbol, self.timeframe, since, limit, params)),
            validate_ohlcv,
        )
        return candles_of(page), page.native

    async def catch_up(self, now_ms: Callable[[], int] = wall_clock_ms) -> int:
        """Publish every closed candle from the checkpoint to now (or `until`); returns how many."""
        tf_ms = timeframe_ms(self.timeframe)
        checkpoint = await self.checkpoints.next_since(self.key)
        since = self.since_ms if checkpoint is None else checkpoint
        # Only a checkpoint is history: before it, a late first candle is the market's start, not a gap.
        has_history = checkpoint is not None
        published = 0
        windowed = profile(self.session.exchange_id).windowed_ohlcv
        while self.until_ms is None or since <= self.until_ms:
            window_end: int | None = None
            if windowed:
                window_end = since + (self.page_limit - 1) * tf_ms
                if self.until_ms is not None:
                    window_end = min(window_end, self.until_ms)
            page, native = await self._page(since, self.page_limit, until=window_end)
            natives = [native]
            fetched_at = datetime.now(UTC)
            candles = [c for c in closed_candles(page, tf_ms, now_ms()) if c.ts >= since]
            if self.until_ms is not None:
                candles = [c for c in candles if c.ts <= self.until_ms]
            if not candles:
                if window_end is not None and window_end + tf_ms <= now_ms():
                    # A closed window with no candle: a hole if we have history, else before the market's start.
                    if has_history:
                        await self._record_gap(since, window_end, tf_ms)
                    await self.checkpoints.advance(self.key, window_end + tf_ms, window_end)
                    since = window_end + tf_ms
                    continue
                break
            gaps = holes([c.ts for c in candles], tf_ms, since if has_history else None)
            if not windowed and has_history and gaps and gaps[0][0] == since:
                # The exchange skipped from our checkpoint to a later candle: ask for exactly the
                # missing interval once before calling it a gap.
                start, end = gaps[0]
                again, native = await self._page(start, self.page_limit, until=end)
                refetched = [c for c in again if start <= c.ts <= end]
                if refetched:
                    log.info(
                        "missing candles re-requested and found", extra={"job": self.name, "found": len(refetched)}
                    )
                    candles = sorted({c.ts: c for c in [*refetched, *candles]}.values(), key=lambda c: c.ts)
                    natives.insert(0, native)
                    gaps = holes([c.ts for c in candles], tf_ms, since)
            await self._publish(candles, fetched_at, since, natives)
            for start, end in gaps:
                await self._record_gap(start, end, tf_ms)
            last_ts = candles[-1].ts
            await self.checkpoints.advance(self.key, last_ts + tf_ms, last_ts)
            published += len(candles)
            has_history = True
            CANDLES_PUBLISHED.labels(self.session.exchange_id, self.symbol, self.timeframe).inc(len(candles))
            NEWEST_RECORD.labels(self.session.exchange_id, self.symbol, "ohlcv", self.timeframe).set(
                (last_ts + tf_ms) / 1000
            )
            FRESHNESS_LAG.labels(self.session.exchange_id, self.symbol, "ohlcv", self.timeframe).set(
                max(0.0, (now_ms() - (last_ts + tf_ms)) / 1000)
            )
            since = last_ts + tf_ms
            if not windowed and len(page) < self.page_limit:
                break
        return published

    async def _publish(
        self, candles: list[Candle], fetched_at: datetime, since: int, natives: list[NativeCall]
    ) -> None:
        snapshot = RawSnapshot(
            schema_version=2,
            native=natives,
            dataset=Dataset.OHLCV,
            exchange=self.session.exchange_id,
            symbol=self.symbol,
            timeframe=self.timeframe,
            fetched_at=fetched_at,
            request={"symbol": self.symbol, "timeframe": self.timeframe, "since": since, "limit": self.page_limit},
            payload=[candle.raw for candle in candles],
            first_ts=candles[0].ts,
            last_ts=candles[-1].ts,
            final=True,
        )
        # Publish before the checkpoint moves: a crash in between republishes the same
        # event (same event_id), which JetStream's duplicate window drops.
        await self.session.publisher.snapshot(snapshot)
        log.info(
            "published candles",
            extra={"job": self.name, "candles": len(candles), "event_id": snapshot.event_id, "last_ts": candles[-1].ts},
        )

    async def _record_gap(self, start: int, end: int, tf_ms: int) -> None:
        gap = KnownGap(
            exchange=self.session.exchange_id,
            symbol=self.symbol,
            dataset=Dataset.OHLCV,
            timeframe=self.timeframe,
            start_ts=start,
            end_ts=end,
            missing=(end - start) // tf_ms + 1,
            detected_at=datetime.now(UTC),
        )
        KNOWN_GAPS.labels(self.session.exchange_id, self.symbol, self.timeframe).inc()
        await self.session.publisher.gap(gap)
