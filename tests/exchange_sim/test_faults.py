"""A malformed candle is served broken while every other candle stays as recorded."""

from __future__ import annotations

import pytest
from cryptoflow_exchange_sim import (
    CsvCandleMarket,
    FaultyMarket,
    Kline,
    MalformedCandle,
    malform,
    parse_malformed_spec,
    running_simulator,
)

from .binance_client import as_ccxt_candles, binance_client, fetch_all_ohlcv, read_fixture_rows

XRPETH_ROWS = read_fixture_rows("XRPETH-1m.csv")
SAMPLE = Kline(1_000, "10.5", "12", "9", "11", "3.2", 60_999, "33", 7, "1", "10", "0")


async def test_exactly_one_candle_is_broken(recorded_market: CsvCandleMarket) -> None:
    broken_at = int(XRPETH_ROWS[1234][0])
    market = FaultyMarket(recorded_market, [MalformedCandle("XRPETH", broken_at)])
    async with running_simulator(market) as base_url, binance_client(base_url) as exchange:
        candles = await fetch_all_ohlcv(exchange, "XRP/ETH", "1m", since=0, page_limit=1000)

    expected = as_ccxt_candles(XRPETH_ROWS)
    differing = [index for index, (got, want) in enumerate(zip(candles, expected, strict=True)) if got != want]
    assert differing == [1234]
    _, open_, high, low, close, _ = candles[1234]
    assert high < max(open_, close)
    assert high < low


def test_high_below_low() -> None:
    broken = malform(SAMPLE, "high_below_low")

    assert float(broken.high) < float(broken.low) <= min(float(broken.open), float(broken.close))
    assert broken._replace(high=SAMPLE.high) == SAMPLE


def test_negative_price() -> None:
    broken = malform(SAMPLE, "negative_price")

    assert float(broken.low) < 0
    assert broken._replace(low=SAMPLE.low) == SAMPLE


def test_negative_volume() -> None:
    broken = malform(SAMPLE, "negative_volume")
    zero_volume = malform(SAMPLE._replace(volume="0"), "negative_volume")

    assert float(broken.volume) < 0
    assert float(zero_volume.volume) < 0
    assert broken._replace(volume=SAMPLE.volume) == SAMPLE


def test_parse_malformed_spec() -> None:
    assert parse_malformed_spec("XRP/ETH:1570752000000") == MalformedCandle("XRPETH", 1570752000000)
    assert parse_malformed_spec("BTCUSDT:5:negative_volume") == MalformedCandle("BTCUSDT", 5, "negative_volume")
    for bad in ["BTCUSDT", "BTCUSDT:soon", "BTCUSDT:5:sideways", ":5", "A:1:high_below_low:x"]:
        with pytest.raises(ValueError):
            parse_malformed_spec(bad)


def test_unlisted_symbol_is_refused(recorded_market: CsvCandleMarket) -> None:
    with pytest.raises(ValueError, match="BTCUSDT"):
        FaultyMarket(recorded_market, [MalformedCandle("BTCUSDT", 0)])
