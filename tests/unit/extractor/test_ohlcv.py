"""closed_candles: only candles whose interval has ended are published."""

from __future__ import annotations

from typing import Any

import pytest
from cryptoflow_contracts import TIMEFRAME_MS, NativeCall
from cryptoflow_extractor.ohlcv import Candle, candles_of, closed_candles
from cryptoflow_extractor.session import Page
from cryptoflow_extractor.validation import validate_ohlcv

MINUTE = 60_000
T0 = 1_717_243_200_000  # 2024-06-01T12:00:00Z
# Pages made here, not read from an exchange: nothing was sent.
NOTHING_SENT = NativeCall(ccxt_version="none", method="fetchOHLCV", args=[], responses=[])


def rows(start: int, n: int, step: int = MINUTE) -> list[list[Any]]:
    return [[start + i * step, 1.0, 2.0, 0.5, 1.5, 10.0 + i] for i in range(n)]


def page(start: int, n: int, step: int = MINUTE) -> list[Candle]:
    raw = rows(start, n, step)
    return candles_of(Page(raw, validate_ohlcv(raw), NOTHING_SENT))


def test_forming_candle_is_dropped() -> None:
    candles = page(T0, 4)
    now = T0 + 3 * MINUTE + 30_000  # half-way through the fourth candle
    assert closed_candles(candles, MINUTE, now) == candles[:3]


def test_candle_closes_exactly_at_its_end() -> None:
    candles = page(T0, 2)
    assert closed_candles(candles, MINUTE, T0 + 2 * MINUTE) == candles
    assert closed_candles(candles, MINUTE, T0 + 2 * MINUTE - 1) == candles[:1]


def test_nothing_closed_yet() -> None:
    assert closed_candles(page(T0, 1), MINUTE, T0 + MINUTE - 1) == []
    assert closed_candles([], MINUTE, T0) == []


@pytest.mark.parametrize("timeframe", ["1m", "5m", "1h", "1d"])
def test_uses_the_timeframe_length(timeframe: str) -> None:
    tf_ms = TIMEFRAME_MS[timeframe]
    candles = page(T0, 3, step=tf_ms)
    now = T0 + 2 * tf_ms + tf_ms // 2
    expected = [c for c in candles if c.ts + tf_ms <= now]
    assert len(expected) == 2
    assert closed_candles(candles, tf_ms, now) == expected


def test_order_and_values_are_kept() -> None:
    candles = page(T0, 5)
    out = closed_candles(candles, MINUTE, T0 + 10 * MINUTE)
    assert out == candles
    assert [c.ts for c in out] == sorted(c.ts for c in out)


def test_each_candle_keeps_the_row_ccxt_returned() -> None:
    raw = [[T0, 1, 2, 0.5, 1.5, 3]]  # integers where floats are expected: parsed as floats
    (candle,) = candles_of(Page(raw, validate_ohlcv(raw), NOTHING_SENT))
    assert candle.raw is raw[0], "the published row is ccxt's own object, not a re-serialisation"
    assert candle.row.open == 1.0 and isinstance(candle.row.open, float)
    assert (candle.ts, candle.row.volume) == (T0, 3.0)


@pytest.mark.parametrize("ts", [None, "x", str(T0), float(T0), True])
def test_a_row_without_an_integer_timestamp_fails_validation(ts: object) -> None:
    with pytest.raises(ValueError, match="valid integer"):
        validate_ohlcv([[ts, 1, 2, 0.5, 1.5, 1], [T0, 1.0, 2.0, 0.5, 1.5, 1.0]])
