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
    MARKET_SNAPSHOT: ClassVar[Dataset]
    AGGREGATOR_PRICE: ClassVar[Dataset]
    AGG_TRADES: ClassVar[Dataset]
    AGGREGATOR_CANDLE: ClassVar[Dataset]


Dataset.OHLCV = Dataset.register("ohlcv")
Dataset.TICKER = Dataset.register("ticker")
Dataset.ORDERBOOK = Dataset.register("orderbook")
Dataset.TRADES = Dataset.register("trades")
# An aggregator's market-wide listing (CoinGecko's coins/markets, CoinPaprika's tickers): per coin,
# price, market cap, 24 h volume, supply and rank. Its "exchange" is the provider.
Dataset.MARKET_SNAPSHOT = Dataset.register("market_snapshot")
# An aggregator's price history of one coin (CoinGecko's market_chart/range, CoinPaprika's
# historical tickers): price, market cap and 24 h volume per point in time.
Dataset.AGGREGATOR_PRICE = Dataset.register("aggregator_price")
# Binance's aggregate trades (consecutive fills of one taker order at one price), from its bulk
# archives (`aggTrades`): their ids are not trade ids, so they are not rows of `trades`.
Dataset.AGG_TRADES = Dataset.register("agg_trades")
# An aggregator's candles of one coin in USD (CoinGecko's ohlc, CoinPaprika's ohlcv/historical):
# open, high, low, close and, where the provider gives them, volume and market cap.
Dataset.AGGREGATOR_CANDLE = Dataset.register("aggregator_candle")


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


# Record times any dataset can plausibly carry, ms since the epoch: from the first Bitcoin block's
# year to 2100. Outside them a timestamp is an error (1969 from a zero, 2200 from a unit mix-up);
# the transformer's own, configurable range is narrower.
PLAUSIBLE_MIN_TS_MS = 1_230_768_000_000  # 2009-01-01T00:00:00Z
PLAUSIBLE_MAX_TS_MS = 4_102_444_800_000  # 2100-01-01T00:00:00Z


def plausible_ts(ts_ms: int | None) -> bool:
    return ts_ms is not None and PLAUSIBLE_MIN_TS_MS <= ts_ms < PLAUSIBLE_MAX_TS_MS
