"""Recorded candles come back through ccxt exactly as recorded, gaps included."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest
from cryptoflow_exchange_sim import CsvCandleMarket, running_simulator
from cryptoflow_exchange_sim.csv_market import listing_from_symbol_id

from .binance_client import (
    FIXTURES,
    as_ccxt_candles,
    binance_client,
    fetch_all_ohlcv,
    get_json,
    read_fixture_rows,
)

XRPETH_ROWS = read_fixture_rows("XRPETH-1m.csv")
ADABTC_ROWS = read_fixture_rows("ADABTC-5m.csv")


@pytest.mark.parametrize("keep_paths", [True, False], ids=["binance-paths", "bare-base-url"])
async def test_load_markets_lists_recorded_symbols(recorded_url: str, keep_paths: bool) -> None:
    async with binance_client(recorded_url, keep_paths=keep_paths) as exchange:
        markets = await exchange.load_markets()

    # Other suites add candle files to the shared fixture directory; every file's symbol is listed.
    listed = {listing_from_symbol_id(path.name.split("-")[0]) for path in FIXTURES.glob("*.csv")}
    assert set(markets) == {f"{listing.base_asset}/{listing.quote_asset}" for listing in listed}
    assert {"XRP/ETH", "ADA/BTC"} <= set(markets)
    xrp_eth = markets["XRP/ETH"]
    assert (xrp_eth["id"], xrp_eth["base"], xrp_eth["quote"]) == ("XRPETH", "XRP", "ETH")
    assert xrp_eth["spot"] is True
    assert xrp_eth["active"] is True


@pytest.mark.parametrize("page_limit", [1000, 333])
async def test_paging_returns_every_recorded_candle_with_gaps_intact(recorded_url: str, page_limit: int) -> None:
    async with binance_client(recorded_url) as exchange:
        candles = await fetch_all_ohlcv(exchange, "XRP/ETH", "1m", since=0, page_limit=page_limit)

    assert candles == as_ccxt_candles(XRPETH_ROWS)
    assert len(candles) == 2469
    holes = sum(1 for before, after in pairwise(candles) if after[0] - before[0] != 60_000)
    assert holes == 676


async def test_without_since_the_newest_500_candles_come_back(recorded_url: str) -> None:
    async with binance_client(recorded_url) as exchange:
        candles = await exchange.fetch_ohlcv("ADA/BTC", "5m")

    assert candles == as_ccxt_candles(ADABTC_ROWS[-500:])


async def test_until_caps_open_times_and_keeps_the_newest(recorded_url: str) -> None:
    until = int(ADABTC_ROWS[1000][0])
    async with binance_client(recorded_url) as exchange:
        candles = await exchange.fetch_ohlcv("ADA/BTC", "5m", limit=10, params={"until": until})

    assert candles == as_ccxt_candles(ADABTC_ROWS[991:1001])


async def test_values_are_served_as_the_recorded_text(recorded_url: str) -> None:
    status, body = await get_json(recorded_url, "/api/v3/klines", {"symbol": "ADABTC", "interval": "5m", "limit": "3"})

    assert status == 200
    assert body == [[int(row[0]), *row[1:6], int(row[0]) + 299_999, "0", 0, "0", "0", "0"] for row in ADABTC_ROWS[-3:]]


async def test_start_and_end_window_and_limits(recorded_url: str) -> None:
    start, end = int(XRPETH_ROWS[10][0]), int(XRPETH_ROWS[19][0])

    _, windowed = await get_json(
        recorded_url,
        "/api/v3/klines",
        {"symbol": "XRPETH", "interval": "1m", "startTime": str(start - 1), "endTime": str(end)},
    )
    _, default_limit = await get_json(
        recorded_url, "/api/v3/klines", {"symbol": "XRPETH", "interval": "1m", "startTime": "0"}
    )
    _, capped = await get_json(
        recorded_url, "/api/v3/klines", {"symbol": "XRPETH", "interval": "1m", "startTime": "0", "limit": "5000"}
    )

    assert [row[0] for row in windowed] == [int(row[0]) for row in XRPETH_ROWS[10:20]]
    assert len(default_limit) == 500
    assert len(capped) == 1000


async def test_interval_without_a_file_is_empty(recorded_url: str) -> None:
    status, body = await get_json(recorded_url, "/api/v3/klines", {"symbol": "XRPETH", "interval": "1h"})

    assert (status, body) == (200, [])


async def test_twelve_column_files_are_served_verbatim(tmp_path: Path) -> None:
    full_rows = [
        "1704067200000,42283.58000000,42299.99000000,42261.02000000,42298.62000000,35.92724000,"
        "1704067259999,1519032.43941620,1327,20.92780000,884843.44588570,0",
        "1704067320000,42298.61,42320.00000001,42298.61,42320.0,0.09946999000000001,"
        "1704067379999,4209.4,7,0.05,2104.7,0",
    ]
    (tmp_path / "BTCUSDT-1m.csv").write_text("\n".join(full_rows) + "\n")
    (tmp_path / "ETHBTC-1d.csv").write_text("1704067200000,0.05,0.06,0.04,0.055,12.5\n")

    async with running_simulator(CsvCandleMarket(tmp_path)) as base_url:
        _, btc = await get_json(base_url, "/api/v3/klines", {"symbol": "BTCUSDT", "interval": "1m"})
        _, eth = await get_json(base_url, "/api/v3/klines", {"symbol": "ETHBTC", "interval": "1d"})
        async with binance_client(base_url) as exchange:
            markets = await exchange.load_markets()
            candles = await exchange.fetch_ohlcv("BTC/USDT", "1m", since=0)

    expected_btc = []
    for line in full_rows:
        tokens = line.split(",")
        expected_btc.append([int(tokens[0]), *tokens[1:6], int(tokens[6]), tokens[7], int(tokens[8]), *tokens[9:]])
    assert btc == expected_btc
    assert eth == [[1704067200000, "0.05", "0.06", "0.04", "0.055", "12.5", 1704153599999, "0", 0, "0", "0", "0"]]
    assert set(markets) == {"BTC/USDT", "ETH/BTC"}
    assert candles == as_ccxt_candles([line.split(",") for line in full_rows])
    assert candles[1][5] == 0.09946999000000001
