"""Each exchange's own refusals (HTTP status + error body) and page-size limits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import ccxt.async_support as ccxt
import pytest
from cryptoflow_exchange_sim import CsvCandleMarket, running_simulator

from .clients import CANDLES, EXCHANGES, TRADES, ccxt_client, http_get

SINCE_S = 1_570_752_000


@pytest.fixture(scope="module")
async def url() -> AsyncIterator[str]:
    async with running_simulator(CsvCandleMarket(CANDLES, TRADES), exchanges=EXCHANGES) as base_url:
        yield base_url


def _bybit_error(body: dict[str, Any]) -> tuple[int, str]:
    assert set(body) == {"retCode", "retMsg", "result", "retExtInfo", "time"}
    return body["retCode"], body["retMsg"]


@pytest.mark.parametrize(
    ("path", "params", "error"),
    [
        ("/v5/market/kline", {"category": "spot", "symbol": "NOPE", "interval": "1"}, (10001, "Not supported symbols")),
        ("/v5/market/kline", {"category": "spot", "symbol": "XRPETH", "interval": "7"}, (10001, "Invalid period!")),
        ("/v5/market/kline", {"symbol": "XRPETH", "interval": "1"}, (10001, "Illegal category")),
        (
            "/v5/market/kline",
            {"category": "linear", "symbol": "XRPETH", "interval": "1"},
            (10001, "Not supported symbols"),
        ),
        (
            "/v5/market/kline",
            {"category": "spot", "symbol": "XRPETH", "interval": "1", "start": "x"},
            (10001, "params error: start invalid"),
        ),
        ("/v5/market/orderbook", {"category": "spot"}, (10001, "params error: symbol is required")),
        (
            "/v5/market/recent-trade",
            {"category": "spot", "symbol": "XRPETH", "limit": "0"},
            (10001, "params error: limit invalid"),
        ),
    ],
)
async def test_bybit_refusals_are_http_200_with_a_ret_code(
    url: str, path: str, params: dict[str, str], error: tuple[int, str]
) -> None:
    status, body = await http_get(url, path, params)

    assert (status, _bybit_error(body)) == (200, error)


@pytest.mark.parametrize(
    ("path", "params", "label", "message"),
    [
        ("/api/v4/spot/candlesticks", {"currency_pair": "NOPE_ETH"}, "INVALID_CURRENCY_PAIR", "Invalid currency pair NOPE_ETH"),
        ("/api/v4/spot/candlesticks", {}, "MISSING_REQUIRED_PARAM", "Missing required parameter: currency_pair"),
        ("/api/v4/spot/candlesticks", {"currency_pair": "XRP_ETH", "interval": "2m"}, "INVALID_PARAM_VALUE", "Invalid interval: 2m"),
        ("/api/v4/spot/candlesticks", {"currency_pair": "XRP_ETH", "interval": "1m", "from": str(SINCE_S), "to": str(SINCE_S + 60_000)},
         "INVALID_PARAM_VALUE", "Candlestick range too broad. Maximum 1000 data points are allowed per request"),
        ("/api/v4/spot/candlesticks", {"currency_pair": "XRP_ETH", "limit": "1001"}, "INVALID_PARAM_VALUE", "Invalid request parameter `limit` value: 1001"),
        ("/api/v4/spot/order_book", {"currency_pair": "XRP_ETH", "limit": "1001"}, "INVALID_PARAM_VALUE", "Invalid request parameter `limit` value: 1001"),
        ("/api/v4/spot/trades", {"currency_pair": "XRP_ETH", "last_id": "abc"}, "INVALID_PARAM_VALUE", "Invalid request parameter `last_id` value: abc"),
    ],
)  # fmt: skip
async def test_gate_refusals_are_http_400_with_a_label(
    url: str, path: str, params: dict[str, str], label: str, message: str
) -> None:
    assert await http_get(url, path, params) == (400, {"label": label, "message": message})


@pytest.mark.parametrize(
    ("path", "params", "code", "msg"),
    [
        ("/api/v3/aggTrades", {"symbol": "XRPETH", "startTime": "0", "endTime": "3600001"}, -1127, "More than 1 hours between startTime and endTime."),
        ("/api/v3/depth", {"symbol": "XRPETH", "limit": "0"}, -1130, "Data sent for parameter 'limit' is not valid."),
        ("/api/v3/ticker/24hr", {"symbol": "NOPEETH"}, -1121, "Invalid symbol."),
        ("/api/v3/trades", {"symbol": "XRPETH", "fromId": "1"}, -1104, "Not all sent parameters were read; read '1' parameter(s) but was sent '2'."),
    ],
)  # fmt: skip
async def test_binance_refusals(url: str, path: str, params: dict[str, str], code: int, msg: str) -> None:
    assert await http_get(url, path, params) == (400, {"code": code, "msg": msg})


async def test_ccxt_maps_the_refusals(url: str) -> None:
    async with ccxt_client("bybit", url) as bybit, ccxt_client("gate", url) as gate:
        with pytest.raises(ccxt.BadRequest, match="10001"):
            await bybit.public_get_v5_market_kline({"category": "spot", "symbol": "NOPE", "interval": "1"})
        with pytest.raises(ccxt.BadSymbol, match="INVALID_CURRENCY_PAIR"):
            await gate.public_spot_get_candlesticks({"currency_pair": "NOPE_ETH"})
        with pytest.raises(ccxt.BadRequest, match="too broad"):
            await gate.public_spot_get_candlesticks(
                {"currency_pair": "XRP_ETH", "interval": "1m", "from": SINCE_S, "to": SINCE_S + 60_000}
            )


@pytest.mark.parametrize(
    ("path", "params", "count"),
    [
        ("/api/v3/depth", {"symbol": "XRPETH", "limit": "6000"}, 5000),
        ("/api/v3/depth", {"symbol": "XRPETH"}, 100),
        ("/v5/market/orderbook", {"category": "spot", "symbol": "XRPETH", "limit": "500"}, 200),
        ("/v5/market/orderbook", {"category": "spot", "symbol": "XRPETH"}, 1),
        ("/api/v4/spot/order_book", {"currency_pair": "XRP_ETH"}, 10),
    ],
)
async def test_book_depths(url: str, path: str, params: dict[str, str], count: int) -> None:
    _, body = await http_get(url, path, params)
    book = body["result"] if "result" in body else body

    assert len(book.get("bids", book.get("b"))) == len(book.get("asks", book.get("a"))) == count


@pytest.mark.parametrize(
    ("path", "params", "count"),
    [
        ("/api/v3/klines", {"symbol": "XRPETH", "interval": "1m", "startTime": "0", "limit": "5000"}, 1000),
        (
            "/v5/market/kline",
            {"category": "spot", "symbol": "XRPETH", "interval": "1", "start": "0", "limit": "5000"},
            1000,
        ),
        ("/v5/market/kline", {"category": "spot", "symbol": "XRPETH", "interval": "1", "start": "0"}, 200),
        ("/api/v4/spot/candlesticks", {"currency_pair": "XRP_ETH", "interval": "1m"}, 100),
        ("/api/v3/trades", {"symbol": "XRPETH", "limit": "5000"}, 1000),
        ("/api/v3/aggTrades", {"symbol": "XRPETH"}, 500),
        ("/v5/market/recent-trade", {"category": "spot", "symbol": "XRPETH", "limit": "1000"}, 60),
        ("/api/v4/spot/trades", {"currency_pair": "XRP_ETH"}, 100),
    ],
)
async def test_page_sizes(url: str, path: str, params: dict[str, str], count: int) -> None:
    _, body = await http_get(url, path, params)
    rows = body["result"]["list"] if isinstance(body, dict) else body

    assert len(rows) == count


async def test_bybit_klines_come_newest_first_from_the_candle_containing_start(url: str) -> None:
    start = (SINCE_S + 90) * 1000  # inside the second recorded minute
    _, body = await http_get(
        url,
        "/v5/market/kline",
        {"category": "spot", "symbol": "XRPETH", "interval": "1", "start": str(start), "limit": "3"},
    )

    # Recorded minutes 1570752060 and 1570752120 exist, 1570752180 is a gap.
    assert [int(row[0]) // 1000 for row in body["result"]["list"]] == [SINCE_S + 240, SINCE_S + 120, SINCE_S + 60]


async def test_gate_marks_only_closed_candles_closed(url: str) -> None:
    async with running_simulator(
        CsvCandleMarket(CANDLES), clock=lambda: (SINCE_S + 90) * 1000, exchanges=["gate"]
    ) as gate_url:
        _, rows = await http_get(
            gate_url,
            "/api/v4/spot/candlesticks",
            {"currency_pair": "XRP_ETH", "interval": "1m", "to": str(SINCE_S + 60)},
        )

    assert [(row[0], row[-1]) for row in rows] == [(str(SINCE_S), "true"), (str(SINCE_S + 60), "false")]
