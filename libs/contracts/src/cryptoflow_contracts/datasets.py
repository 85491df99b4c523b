"""Datasets and timeframes: the vocabulary every contract is written in."""

from __future__ import annotations

from typing import ClassVar

from .names import RegisteredName


class Dataset(RegisteredName):
    """A dataset: the built-in four, plus any a registry declares (`Dataset.register`)."""

    OHLCV: ClassVar[Dataset]
    TICKER: ClassVar[Dataset]
    ORDERBOOK: ClassVar[Dataset]
    TRADES: ClassVar[Dataset]


Dataset.OHLCV = Dataset.register("ohlcv")
Dataset.TICKER = Dataset.register("ticker")
Dataset.ORDERBOOK = Dataset.register("orderbook")
Dataset.TRADES = Dataset.register("trades")


# Milliseconds per candle for the timeframes ccxt exchanges share; a timeframe
# outside this table is a configuration error, not something to guess.
TIMEFRAME_MS: dict[str, int] = {
    "1m": 60_000,
    "3m": 3 * 60_000,
    "5m": 5 * 60_000,
    "15m": 15 * 60_000,
    "30m": 30 * 60_000,
    "1h": 3_600_000,
    "2h": 2 * 3_600_000,
    "4h": 4 * 3_600_000,
    "6h": 6 * 3_600_000,
    "8h": 8 * 3_600_000,
    "12h": 12 * 3_600_000,
    "1d": 86_400_000,
}


def timeframe_ms(timeframe: str) -> int:
    try:
        return TIMEFRAME_MS[timeframe]
    except KeyError:
        known = ", ".join(TIMEFRAME_MS)
        raise ValueError(f"unknown timeframe {timeframe!r}; known: {known}") from None
