"""Aggregator listings, histories and candles parsed from their wire format (tests/fixtures/aggregators,
see its README)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptoflow_native.aggregators import (
    CANDLE_FIELDS,
    COINGECKO_CHART_METHOD,
    COINGECKO_MARKETS_METHOD,
    COINGECKO_OHLC_METHOD,
    COINPAPRIKA_HISTORY_METHOD,
    COINPAPRIKA_OHLCV_METHOD,
    COINPAPRIKA_TICKERS_METHOD,
    POINT_FIELDS,
    RECORD_FIELDS,
    AggregatorResponseError,
    candle_records,
    coingecko_ohlc_timeframe,
    history_points,
    iso_ms,
    market_records,
)

FIXTURES = Path(__file__).parents[2] / "fixtures" / "aggregators"


def test_coingecko_markets_become_market_records() -> None:
    records = market_records(COINGECKO_MARKETS_METHOD, (FIXTURES / "coingecko_markets.json").read_bytes())
    assert [r["asset_id"] for r in records] == ["bitcoin", "ethereum", "batcat"]
    bitcoin = records[0]
    assert list(bitcoin) == list(RECORD_FIELDS)
    assert bitcoin["asset_symbol"] == "BTC"  # CoinGecko sends tickers in lower case
    assert bitcoin["ts"] == 1735646698113  # 2024-12-31T12:04:58.113Z
    assert (bitcoin["price_usd"], bitcoin["market_cap_usd"], bitcoin["rank"]) == (97012.5, 1921771032710, 1)
    assert (bitcoin["volume_24h_usd"], bitcoin["pct_change_24h"]) == (41234567890.12, 1.26341)
    assert (bitcoin["circulating_supply"], bitcoin["total_supply"], bitcoin["max_supply"]) == (
        19809812.0,
        21000000.0,
        21000000.0,
    )
    assert records[1]["max_supply"] is None
    # Another coin with the ticker BTC, unranked: parsed as sent, the registry tells them apart.
    assert (records[2]["asset_symbol"], records[2]["rank"]) == ("BTC", None)


def test_coinpaprika_tickers_become_market_records() -> None:
    records = market_records(COINPAPRIKA_TICKERS_METHOD, (FIXTURES / "coinpaprika_tickers.json").read_bytes())
    bitcoin, tether = records
    assert bitcoin["asset_id"] == "btc-bitcoin" and bitcoin["asset_symbol"] == "BTC"
    assert bitcoin["ts"] == 1735646700000
    assert (bitcoin["price_usd"], bitcoin["market_cap_usd"], bitcoin["volume_24h_usd"]) == (
        97020.1234,
        1921921234567,
        40123456789.12,
    )
    assert (bitcoin["pct_change_24h"], bitcoin["rank"], bitcoin["max_supply"]) == (1.27, 1, 21000000)
    assert tether["max_supply"] is None  # CoinPaprika's 0: no maximum supply


def test_an_error_body_or_an_unknown_method_is_refused() -> None:
    with pytest.raises(AggregatorResponseError, match="not a list"):
        market_records(COINGECKO_MARKETS_METHOD, b'{"status": {"error_code": 429}}')
    with pytest.raises(AggregatorResponseError, match="not an aggregator listing"):
        market_records("fetchTicker", b"[]")


def test_iso_times_without_a_zone_or_garbled_are_none() -> None:
    assert iso_ms("2024-12-31T12:05:00Z") == 1735646700000
    assert iso_ms("2024-12-31T12:05:00") is None
    assert iso_ms("yesterday") is None
    assert iso_ms(1735646700000) is None


def test_coingecko_chart_points_join_prices_caps_and_volumes_by_time() -> None:
    body = (
        b'{"prices": [[1704067200000, 42261.0446], [1704070800000, 42412.5], [1704074400000]],'
        b' "market_caps": [[1704067200000, 827882932440.2], [1704070800000, 830000000000]],'
        b' "total_volumes": [[1704067200000, 11754523812.9]]}'
    )
    points = history_points(COINGECKO_CHART_METHOD, body)
    assert points == [
        {
            "ts": 1704067200000,
            "price_usd": 42261.0446,
            "market_cap_usd": 827882932440.2,
            "volume_24h_usd": 11754523812.9,
        },
        {"ts": 1704070800000, "price_usd": 42412.5, "market_cap_usd": 830000000000, "volume_24h_usd": None},
        dict.fromkeys(POINT_FIELDS),  # a point that is not [time, price]: kept, to be quarantined
    ]
    with pytest.raises(AggregatorResponseError, match="no list of prices"):
        history_points(COINGECKO_CHART_METHOD, b'{"error": "coin not found"}')


def test_coinpaprika_history_points() -> None:
    body = (
        b'[{"timestamp": "2024-01-01T00:00:00Z", "price": 42280.5, "volume_24h": 9999.5, "market_cap": 828000000000}]'
    )
    assert history_points(COINPAPRIKA_HISTORY_METHOD, body) == [
        {"ts": 1704067200000, "price_usd": 42280.5, "market_cap_usd": 828000000000, "volume_24h_usd": 9999.5}
    ]


def test_coingecko_ohlc_rows_become_candles_opening_a_timeframe_before_their_close() -> None:
    body = (FIXTURES / "coingecko_ohlc.json").read_bytes()
    candles = candle_records(COINGECKO_OHLC_METHOD, body, {"vs_currency": "usd", "days": "7"})
    assert [list(c) for c in candles] == [list(CANDLE_FIELDS)] * 4
    # The first row closes at 2024-03-02T12:00Z: a 4-hour candle (days=7) that opened at 08:00.
    assert candles[0] == {
        "timeframe": "4h",
        "ts": 1709380800000 - 4 * 3_600_000,
        "open": 62012.41,
        "high": 62190.0,
        "low": 61780.15,
        "close": 61905.77,
        "volume": None,
        "market_cap": None,
    }
    assert [c["ts"] for c in candles] == [1709366400000, 1709380800000, 1709395200000, 1709409600000]


def test_coingecko_ohlc_timeframes_follow_days_and_a_row_not_of_five_is_kept_to_be_quarantined() -> None:
    assert [coingecko_ohlc_timeframe({"days": d}) for d in ("1", "2", "7", "14", "30", "90", "365", "max")] == [
        "30m", "30m", "4h", "4h", "4h", "4d", "4d", "4d",
    ]  # fmt: skip
    assert coingecko_ohlc_timeframe({"days": "30", "interval": "daily"}) == "1d"  # a paid plan's interval
    assert coingecko_ohlc_timeframe({"days": "soon"}) is None
    candles = candle_records(
        COINGECKO_OHLC_METHOD, b"[[1709395200000, 1, 2, 0.5], [1709397000000, 1, 2, 0.5, 1.5]]", {"days": "1"}
    )
    assert candles[0] == dict.fromkeys(CANDLE_FIELDS) | {"timeframe": "30m"}
    assert (candles[1]["timeframe"], candles[1]["ts"]) == ("30m", 1709395200000)
    with pytest.raises(AggregatorResponseError, match="not a list"):
        candle_records(COINGECKO_OHLC_METHOD, b'{"error": "coin not found"}', {"days": "7"})
    with pytest.raises(AggregatorResponseError, match="names no timeframe"):
        candle_records(COINGECKO_OHLC_METHOD, b"[]", {})


def test_coinpaprika_ohlcv_candles_are_daily_with_volume_and_market_cap() -> None:
    body = (FIXTURES / "coinpaprika_ohlcv_historical.json").read_bytes()
    candles = candle_records(COINPAPRIKA_OHLCV_METHOD, body, {"start": "2024-03-01", "end": "2024-03-03"})
    assert [(c["timeframe"], c["ts"]) for c in candles] == [
        ("1d", 1709251200000),  # 2024-03-01T00:00:00Z: time_open
        ("1d", 1709337600000),
        ("1d", 1709424000000),
    ]
    assert candles[0] | {"ts": None} == {
        "timeframe": "1d", "ts": None, "open": 61168.06, "high": 63155.1, "low": 60802.53, "close": 62440.63,
        "volume": 40186368423, "market_cap": 1201617846410,
    }  # fmt: skip
    hourly = candle_records(COINPAPRIKA_OHLCV_METHOD, body, {"interval": "1h"})  # a paid plan's interval
    assert {c["timeframe"] for c in hourly} == {"1h"}
    with pytest.raises(AggregatorResponseError, match="not a list"):
        candle_records(COINPAPRIKA_OHLCV_METHOD, b'{"error": "id not found"}', {})
    with pytest.raises(AggregatorResponseError, match="not an aggregator's candles"):
        candle_records(COINGECKO_CHART_METHOD, body, {})
