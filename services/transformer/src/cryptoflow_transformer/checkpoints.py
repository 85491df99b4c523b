"""Where a series' derived computations stand after a candle: everything needed to go on from it.

A checkpoint is a pure function of the series' candles up to `last_ts`, so going on from it gives
bit-for-bit the values a computation from the series start would give (see docs/decisions/0012).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

# Candles kept in a checkpoint: more than the longest look-back (BB 20, EMA 26 + signal 9 seed,
# RSI 14) so that any recursion not seeded yet can be recomputed from the series start.
WARMUP = 64


@dataclass(frozen=True)
class Bucket:
    """The open (newest) resampled candle of one target timeframe, as far as it goes."""

    start: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    last_ts: int


@dataclass(frozen=True)
class Checkpoint:
    last_ts: int  # newest candle covered
    count: int  # candles from the series start through last_ts
    tail_ts: list[int]  # the last `tail` candles, oldest first
    tail_close: list[float]
    tail_volume: list[float]
    ema_fast: float | None = None
    ema_slow: float | None = None
    macd_signal: float | None = None
    avg_gain: float | None = None
    avg_loss: float | None = None
    vwap_day: int | None = None
    vwap_pv: float = 0.0
    vwap_volume: float = 0.0
    buckets: dict[str, Bucket] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Checkpoint:
        buckets = {tf: Bucket(**bucket) for tf, bucket in data.pop("buckets", {}).items()}
        return cls(**data, buckets=buckets)


@dataclass(frozen=True)
class SeriesState:
    """A series' checkpoints, oldest first; older ones serve batches that arrive late."""

    checkpoints: tuple[Checkpoint, ...] = ()

    @property
    def newest(self) -> Checkpoint | None:
        return self.checkpoints[-1] if self.checkpoints else None

    def before(self, ts: int) -> Checkpoint | None:
        """The newest checkpoint strictly before `ts` (None: start from the series' first candle)."""
        earlier = [cp for cp in self.checkpoints if cp.last_ts < ts]
        return earlier[-1] if earlier else None

    def advanced(self, from_ts: int, end: Checkpoint, keep: int) -> SeriesState:
        """Checkpoints at or after `from_ts` described candles since replaced or joined by others: drop them."""
        valid = [cp for cp in self.checkpoints if cp.last_ts < from_ts]
        return SeriesState(tuple([*valid, end][-keep:]))

    def to_json(self) -> bytes:
        # orjson writes dataclasses itself, fields in order: the bytes `asdict` gives, ~80x faster.
        return orjson.dumps({"checkpoints": list(self.checkpoints)})

    @classmethod
    def from_json(cls, data: bytes) -> SeriesState:
        document = orjson.loads(data)
        return cls(tuple(Checkpoint.from_dict(cp) for cp in document["checkpoints"]))
