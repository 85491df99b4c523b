"""Aggregators' market listings, price histories and candles, as they send them: CoinGecko's
`/api/v3/coins/markets` and CoinPaprika's `/v1/tickers`, parsed into one record shape (the
`market_snapshots` silver row's); CoinGecko's `/coins/{id}/market_chart/range` and CoinPaprika's
`/tickers/{id}/historical`, into price points (the `aggregator_prices` row's); CoinGecko's
`/coins/{id}/ohlc` and CoinPaprika's `/coins/{id}/ohlcv/historical`, into candles (the
`aggregator_candles` row's).

The wire formats are the providers' documented ones (CoinGecko v3: `id`, `symbol` in lower case,
`current_price`, `market_cap`, `market_cap_rank`, `total_volume`, supplies,
`price_change_percentage_24h`, `last_updated` in ISO 8601; CoinPaprika v1: `id` like
`btc-bitcoin`, `symbol` in upper case, `rank`, supplies, `quotes.USD` with `price`, `volume_24h`,
`market_cap`, `percent_change_24h`, `last_updated`). Candles: CoinGecko's `ohlc` body is a list
of `[time, open, high, low, close]` whose time is the candle's *close* (ms), without volume, its
timeframe set by the request's `days` (30 minutes for 1–2 days, 4 hours for 3–30, 4 days beyond;
`interval=hourly|daily` on paid plans); CoinPaprika's `ohlcv/historical` body is a list of
`{time_open, time_close, open, high, low, close, volume, market_cap}` (ISO 8601, `time_close` the
last second of the candle), daily unless the request's `interval` says otherwise. A candle's `ts`
here is its open time, as for every candle of the pipeline. The extractor keeps each response
body as received (its bronze) and the transformer parses it again here, so a parser fix replays
over history as for the exchanges.

Values are passed through as sent (a number stays a number, a string a string): the
transformer's checks turn what does not parse into a quarantined row with its reason. One
normalisation: CoinPaprika says `max_supply: 0` for a coin without a maximum supply, which is
null here (no coin has a maximum of zero).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson

COINGECKO_MARKETS_METHOD = "coingeckoMarkets"
"""`NativeCall.method` of a page of CoinGecko's `/api/v3/coins/markets` (its body: a JSON list)."""
COINPAPRIKA_TICKERS_METHOD = "coinpaprikaTickers"
"""`NativeCall.method` of CoinPaprika's `/v1/tickers` (its body: a JSON list of every coin)."""
COINGECKO_CHART_METHOD = "coingeckoMarketChartRange"
"""`NativeCall.method` of CoinGecko's `/coins/{id}/market_chart/range` (its body: prices, market caps and
total volumes, each a list of [ms, value])."""
COINPAPRIKA_HISTORY_METHOD = "coinpaprikaTickerHistory"
"""`NativeCall.method` of CoinPaprika's `/tickers/{id}/historical` (its body: a list of points)."""
COINGECKO_OHLC_METHOD = "coingeckoOhlc"
"""`NativeCall.method` of CoinGecko's `/coins/{id}/ohlc` (its body: a list of [close ms, open, high, low, close])."""
COINPAPRIKA_OHLCV_METHOD = "coinpaprikaOhlcvHistorical"
"""`NativeCall.method` of CoinPaprika's `/coins/{id}/ohlcv/historical` (its body: a list of candles)."""
AGGREGATOR_METHODS = frozenset({COINGECKO_MARKETS_METHOD, COINPAPRIKA_TICKERS_METHOD})
HISTORY_METHODS = frozenset({COINGECKO_CHART_METHOD, COINPAPRIKA_HISTORY_METHOD})
CANDLE_METHODS = frozenset({COINGECKO_OHLC_METHOD, COINPAPRIKA_OHLCV_METHOD})
# What a price-history point holds (the `aggregator_prices` silver row's values).
POINT_FIELDS = ("ts", "price_usd", "market_cap_usd", "volume_24h_usd")
# What a candle holds (the `aggregator_candles` silver row's values; ts: the open time, ms).
CANDLE_FIELDS = ("timeframe", "ts", "open", "high", "low", "close", "volume", "market_cap")
# The timeframes the providers' candles come in, and their length.
CANDLE_MS = {
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
    "4d": 345_600_000,
}
# CoinPaprika's `interval` → the timeframe of its candles (24h, the default: daily).
COINPAPRIKA_INTERVALS = {"5m": "5m", "15m": "15m", "30m": "30m", "1h": "1h", "6h": "6h", "12h": "12h", "24h": "1d"}

# What a market record holds, in the silver table's order (asset_id: the provider's coin id).
RECORD_FIELDS = (
    "asset_id",
    "asset_symbol",
    "name",
    "ts",
    "price_usd",
    "market_cap_usd",
    "volume_24h_usd",
    "circulating_supply",
    "total_supply",
    "max_supply",
    "rank",
    "pct_change_24h",
)


class AggregatorResponseError(ValueError):
    """A body that is not the listing its method names (an error object, not a list)."""


def iso_ms(value: Any) -> int | None:
    """An ISO 8601 time (`2024-06-01T12:00:00.000Z`) as ms since the epoch; None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None  # a time without its zone is not a time we can place
    return int(moment.timestamp() * 1000)


def _listing(body: str | bytes, method: str) -> list[Mapping[str, Any]]:
    document = orjson.loads(body)
    if not isinstance(document, list):
        raise AggregatorResponseError(f"{method}: the body is a {type(document).__name__}, not a list of coins")
    return [item for item in document if isinstance(item, Mapping)]


def coingecko_records(body: str | bytes) -> list[dict[str, Any]]:
    return [
        {
            "asset_id": coin.get("id"),
            "asset_symbol": coin["symbol"].upper() if isinstance(coin.get("symbol"), str) else coin.get("symbol"),
            "name": coin.get("name"),
            "ts": iso_ms(coin.get("last_updated")),
            "price_usd": coin.get("current_price"),
            "market_cap_usd": coin.get("market_cap"),
            "volume_24h_usd": coin.get("total_volume"),
            "circulating_supply": coin.get("circulating_supply"),
            "total_supply": coin.get("total_supply"),
            "max_supply": coin.get("max_supply"),
            "rank": coin.get("market_cap_rank"),
            "pct_change_24h": coin.get("price_change_percentage_24h"),
        }
        for coin in _listing(body, COINGECKO_MARKETS_METHOD)
    ]


def coinpaprika_records(body: str | bytes) -> list[dict[str, Any]]:
    records = []
    for coin in _listing(body, COINPAPRIKA_TICKERS_METHOD):
        quotes = coin.get("quotes")
        usd = quotes.get("USD") if isinstance(quotes, Mapping) else None
        usd = usd if isinstance(usd, Mapping) else {}
        max_supply = coin.get("max_supply")
        records.append(
            {
                "asset_id": coin.get("id"),
                "asset_symbol": coin.get("symbol"),
                "name": coin.get("name"),
                "ts": iso_ms(coin.get("last_updated")),
                "price_usd": usd.get("price"),
                "market_cap_usd": usd.get("market_cap"),
                "volume_24h_usd": usd.get("volume_24h"),
                "circulating_supply": coin.get("circulating_supply"),
                "total_supply": coin.get("total_supply"),
                "max_supply": None if max_supply == 0 else max_supply,
                "rank": coin.get("rank"),
                "pct_change_24h": usd.get("percent_change_24h"),
            }
        )
    return records


def market_records(method: str, body: str | bytes) -> list[dict[str, Any]]:
    """The coins of one response of `method`, as market records (RECORD_FIELDS)."""
    if method == COINGECKO_MARKETS_METHOD:
        return coingecko_records(body)
    if method == COINPAPRIKA_TICKERS_METHOD:
        return coinpaprika_records(body)
    raise AggregatorResponseError(f"{method!r} is not an aggregator listing ({', '.join(sorted(AGGREGATOR_METHODS))})")


def coingecko_chart_points(body: str | bytes) -> list[dict[str, Any]]:
    """One point per time of `prices`, with the market cap and volume CoinGecko gives for that time."""
    document = orjson.loads(body)
    if not isinstance(document, Mapping) or not isinstance(document.get("prices"), list):
        raise AggregatorResponseError(f"{COINGECKO_CHART_METHOD}: the body has no list of prices")

    def by_time(name: str) -> dict[Any, Any]:
        series = document.get(name)
        return {p[0]: p[1] for p in series if isinstance(p, list) and len(p) == 2} if isinstance(series, list) else {}

    caps, volumes = by_time("market_caps"), by_time("total_volumes")
    points = []
    for point in document["prices"]:
        if not isinstance(point, list) or len(point) != 2:
            points.append(dict.fromkeys(POINT_FIELDS))  # kept: the transformer quarantines it with its reason
            continue
        ts, price = point
        points.append({"ts": ts, "price_usd": price, "market_cap_usd": caps.get(ts), "volume_24h_usd": volumes.get(ts)})
    return points


def coinpaprika_history_points(body: str | bytes) -> list[dict[str, Any]]:
    return [
        {
            "ts": iso_ms(point.get("timestamp")),
            "price_usd": point.get("price"),
            "market_cap_usd": point.get("market_cap"),
            "volume_24h_usd": point.get("volume_24h"),
        }
        for point in _listing(body, COINPAPRIKA_HISTORY_METHOD)
    ]


def history_points(method: str, body: str | bytes) -> list[dict[str, Any]]:
    """The price points of one response of `method` (POINT_FIELDS)."""
    if method == COINGECKO_CHART_METHOD:
        return coingecko_chart_points(body)
    if method == COINPAPRIKA_HISTORY_METHOD:
        return coinpaprika_history_points(body)
    raise AggregatorResponseError(f"{method!r} is not an aggregator history ({', '.join(sorted(HISTORY_METHODS))})")


def coingecko_ohlc_timeframe(params: Mapping[str, Any]) -> str | None:
    """The timeframe of CoinGecko's `ohlc` candles for a request's parameters (None: not one it answers)."""
    interval = params.get("interval")
    if interval in ("hourly", "daily"):
        return "1h" if interval == "hourly" else "1d"
    days = params.get("days")
    if days == "max":
        return "4d"
    try:
        count = int(str(days))
    except ValueError:
        return None
    if count < 1:
        return None
    return "30m" if count <= 2 else "4h" if count <= 30 else "4d"


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def coingecko_ohlc_candles(body: str | bytes, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One candle per `[close ms, open, high, low, close]` row, `ts` its open time."""
    timeframe = coingecko_ohlc_timeframe(params)
    if timeframe is None:
        raise AggregatorResponseError(f"{COINGECKO_OHLC_METHOD}: days={params.get('days')!r} names no timeframe")
    document = orjson.loads(body)
    if not isinstance(document, list):
        raise AggregatorResponseError(f"{COINGECKO_OHLC_METHOD}: the body is a {type(document).__name__}, not a list")
    candles = []
    for row in document:
        if not isinstance(row, list) or len(row) != 5:
            candles.append(dict.fromkeys(CANDLE_FIELDS) | {"timeframe": timeframe})  # quarantined with its reason
            continue
        closes_at, open_, high, low, close = row
        closes_at = _int_or_none(closes_at)
        ts = None if closes_at is None else closes_at - CANDLE_MS[timeframe]
        candles.append(
            {"timeframe": timeframe, "ts": ts, "open": open_, "high": high, "low": low, "close": close,
             "volume": None, "market_cap": None}
        )  # fmt: skip
    return candles


def coinpaprika_ohlcv_candles(body: str | bytes, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One candle per object, `ts` its `time_open`."""
    timeframe = COINPAPRIKA_INTERVALS.get(str(params.get("interval", "24h")))
    if timeframe is None:
        raise AggregatorResponseError(f"{COINPAPRIKA_OHLCV_METHOD}: interval={params.get('interval')!r} is not one")
    return [
        {
            "timeframe": timeframe,
            "ts": iso_ms(candle.get("time_open")),
            "open": candle.get("open"),
            "high": candle.get("high"),
            "low": candle.get("low"),
            "close": candle.get("close"),
            "volume": candle.get("volume"),
            "market_cap": candle.get("market_cap"),
        }
        for candle in _listing(body, COINPAPRIKA_OHLCV_METHOD)
    ]


def candle_records(method: str, body: str | bytes, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The candles of one response of `method` to a request with `params` (CANDLE_FIELDS)."""
    if method == COINGECKO_OHLC_METHOD:
        return coingecko_ohlc_candles(body, params)
    if method == COINPAPRIKA_OHLCV_METHOD:
        return coinpaprika_ohlcv_candles(body, params)
    raise AggregatorResponseError(f"{method!r} is not an aggregator's candles ({', '.join(sorted(CANDLE_METHODS))})")
