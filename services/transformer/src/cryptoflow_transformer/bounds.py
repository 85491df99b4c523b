"""How far a row's time and numbers may plausibly go: outside, the row is quarantined on its own.

A 1969 candle (a zero timestamp), a 2200 one (seconds read as milliseconds) or a price of 1e308
is well-formed and passes every market check, then breaks what is downstream: a warehouse
partition per hostile month, sums that overflow. The range is configurable
(`TRANSFORMER_MIN_TS`, `TRANSFORMER_MAX_TS_AHEAD_S`, `TRANSFORMER_MAX_ABS_VALUE`); the defaults
cover every real market.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl
from cryptoflow_contracts import PLAUSIBLE_MAX_TS_MS, PLAUSIBLE_MIN_TS_MS

from .quality import Check

TS_OUT_OF_RANGE = "ts_out_of_range"
VALUE_OUT_OF_RANGE = "value_out_of_range"


@dataclass(frozen=True)
class Bounds:
    min_ts_ms: int = PLAUSIBLE_MIN_TS_MS
    max_ts_ahead_ms: int = 86_400_000  # a record time at most a day past the transformer's clock
    max_abs_value: float = 1e15  # no price, amount or volume of any market comes near

    def max_ts_ms(self) -> int:
        return min(int(time.time() * 1000) + self.max_ts_ahead_ms, PLAUSIBLE_MAX_TS_MS)


_current = Bounds()


def configure(bounds: Bounds) -> None:
    """The service's configured bounds (set once at start; the checks read them)."""
    global _current
    _current = bounds


def current() -> Bounds:
    return _current


def ts_check(column: str = "ts_ms") -> Check:
    bounds = _current
    outside = (pl.col(column) < bounds.min_ts_ms) | (pl.col(column) > bounds.max_ts_ms())
    return (outside.fill_null(False), TS_OUT_OF_RANGE)


def value_check(columns: Sequence[str]) -> Check:
    limit = _current.max_abs_value
    return (pl.any_horizontal((pl.col(c).abs() > limit).fill_null(False) for c in columns), VALUE_OUT_OF_RANGE)


def within(ts_ms: pl.Series, values: Sequence[pl.Series]) -> bool:
    """Every time and value inside the bounds (nulls aside): the all-pass shortcut's part."""
    bounds = _current
    lowest, highest = ts_ms.min(), ts_ms.max()
    if lowest is not None and (lowest < bounds.min_ts_ms or highest > bounds.max_ts_ms()):  # type: ignore[operator]
        return False
    return all((series.abs().max() or 0) <= bounds.max_abs_value for series in values)  # type: ignore[operator]
