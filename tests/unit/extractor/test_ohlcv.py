"""closed_candles: only candles whose interval has ended are published."""

from __future__ import annotations

from typing import Any

import pytest
from cryptoflow_contracts import TIMEFRAME_MS
from cryptoflow_extractor.ohlcv import closed_candles

MINUTE = 60_000
T0 = 1_717_243_200_000  # 2024-06-01T12:00:00Z


def page(start: int, n: int, step: int = MINUTE) -> list[list[Any]]:
    return [[start + i * step, 1.0, 2.0, 0.5, 1.5, 10.0 + i] for i in range(n)]


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
    expected = [c for c in candles if c[0] + tf_ms <= now]
    assert len(expected) == 2
    assert closed_candles(candles, tf_ms, now) == expected


def test_order_and_values_are_kept() -> None:
    candles = page(T0, 5)
    out = closed_candles(candles, MINUTE, T0 + 10 * MINUTE)
    assert out == candles
    assert [c[0] for c in out] == sorted(c[0] for c in out)


def test_rows_without_an_integer_timestamp_are_dropped() -> None:
    good = [T0, 1.0, 2.0, 0.5, 1.5, 1.0]
    assert closed_candles([[None, 1, 2, 0.5, 1.5, 1], ["x", 1, 2, 0.5, 1.5, 1], good], MINUTE, T0 + MINUTE) == [good]
