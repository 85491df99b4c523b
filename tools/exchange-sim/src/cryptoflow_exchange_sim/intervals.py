"""Binance kline intervals and the UTC calendar their candles are aligned to."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

_SECOND_MS = 1_000
_MINUTE_MS = 60 * _SECOND_MS
_HOUR_MS = 60 * _MINUTE_MS
_DAY_MS = 24 * _HOUR_MS
# 1970-01-01 was a Thursday; Binance weeks open on Monday 00:00 UTC.
_FIRST_MONDAY_MS = 4 * _DAY_MS


@dataclass(frozen=True, slots=True)
class Interval:
    """One kline interval. Fixed intervals repeat every `length_ms` from `anchor_ms`;
    `1M` follows calendar months, so its length varies."""

    name: str
    length_ms: int
    anchor_ms: int = 0
    calendar_month: bool = False

    def floor(self, ts_ms: int) -> int:
        """Open time of the candle that contains `ts_ms`."""
        if self.calendar_month:
            moment = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
            return _month_start_ms(moment.year, moment.month)
        return ts_ms - (ts_ms - self.anchor_ms) % self.length_ms

    def ceil(self, ts_ms: int) -> int:
        """Open time of the first candle opening at or after `ts_ms`."""
        floored = self.floor(ts_ms)
        return floored if floored == ts_ms else self.shift(floored, 1)

    def shift(self, open_time_ms: int, candles: int) -> int:
        """Open time `candles` candles after (or before, if negative) `open_time_ms`."""
        if self.calendar_month:
            moment = datetime.fromtimestamp(open_time_ms / 1000, tz=UTC)
            year, month_index = divmod(moment.year * 12 + moment.month - 1 + candles, 12)
            return _month_start_ms(year, month_index + 1)
        return open_time_ms + candles * self.length_ms

    def close_time(self, open_time_ms: int) -> int:
        """Binance's close time: the last millisecond inside the candle."""
        return self.shift(open_time_ms, 1) - 1


def _month_start_ms(year: int, month: int) -> int:
    return int(datetime(year, month, 1, tzinfo=UTC).timestamp()) * 1000


_ALL = (
    Interval("1s", _SECOND_MS),
    Interval("1m", _MINUTE_MS),
    Interval("3m", 3 * _MINUTE_MS),
    Interval("5m", 5 * _MINUTE_MS),
    Interval("15m", 15 * _MINUTE_MS),
    Interval("30m", 30 * _MINUTE_MS),
    Interval("1h", _HOUR_MS),
    Interval("2h", 2 * _HOUR_MS),
    Interval("4h", 4 * _HOUR_MS),
    Interval("6h", 6 * _HOUR_MS),
    Interval("8h", 8 * _HOUR_MS),
    Interval("12h", 12 * _HOUR_MS),
    Interval("1d", _DAY_MS),
    Interval("3d", 3 * _DAY_MS),
    Interval("1w", 7 * _DAY_MS, anchor_ms=_FIRST_MONDAY_MS),
    # Nominal 30 days: only used to scale simulated volatility and volume.
    Interval("1M", 30 * _DAY_MS, calendar_month=True),
)

# Binance interval names are case-sensitive: "1m" is a minute, "1M" a month.
INTERVALS: dict[str, Interval] = {interval.name: interval for interval in _ALL}
