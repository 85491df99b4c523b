"""Refusals carry Binance's HTTP status and `{"code", "msg"}` body, so ccxt raises the right error."""

from __future__ import annotations

import aiohttp
import ccxt.async_support as ccxt
import pytest

from .binance_client import binance_client, get_json

KLINES = "/api/v3/klines"


async def test_unknown_symbol_is_bad_symbol_in_ccxt(recorded_url: str) -> None:
    async with binance_client(recorded_url) as exchange:
        with pytest.raises(ccxt.BadSymbol, match="-1121"):
            await exchange.public_get_klines({"symbol": "NOPEUSDT", "interval": "1m"})


async def test_unknown_interval_is_bad_request_in_ccxt(recorded_url: str) -> None:
    async with binance_client(recorded_url) as exchange:
        with pytest.raises(ccxt.BadRequest, match="-1120"):
            await exchange.public_get_klines({"symbol": "XRPETH", "interval": "7m"})


@pytest.mark.parametrize(
    ("path", "params", "code", "msg"),
    [
        (KLINES, {"symbol": "NOPEUSDT", "interval": "1m"}, -1121, "Invalid symbol."),
        (KLINES, {"symbol": "XRPETH", "interval": "1x"}, -1120, "Invalid interval."),
        (
            KLINES,
            {"interval": "1m"},
            -1102,
            "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
        ),
        (
            KLINES,
            {"symbol": "XRPETH"},
            -1102,
            "Mandatory parameter 'interval' was not sent, was empty/null, or malformed.",
        ),
        (
            KLINES,
            {"symbol": "XRPETH", "interval": "1m", "startTime": "yesterday"},
            -1100,
            "Illegal characters found in parameter 'startTime'; legal range is '^[0-9]{1,20}$'.",
        ),
        (
            KLINES,
            {"symbol": "xrpeth", "interval": "1m"},
            -1100,
            "Illegal characters found in parameter 'symbol'; legal range is '^[A-Z0-9-_.]{1,20}$'.",
        ),
        (
            KLINES,
            {"symbol": "XRPETH", "interval": "1m", "startTime": "2", "endTime": "1"},
            -1023,
            "Start time is greater than end time.",
        ),
        (
            KLINES,
            {"symbol": "XRPETH", "interval": "1m", "foo": "1"},
            -1104,
            "Not all sent parameters were read; read '2' parameter(s) but was sent '3'.",
        ),
        ("/api/v3/exchangeInfo", {"symbol": "NOPEUSDT"}, -1121, "Invalid symbol."),
    ],
)
async def test_error_bodies(recorded_url: str, path: str, params: dict[str, str], code: int, msg: str) -> None:
    status, body = await get_json(recorded_url, path, params)

    assert (status, body) == (400, {"code": code, "msg": msg})


async def test_duplicate_parameter(recorded_url: str) -> None:
    query = "?symbol=XRPETH&interval=1m&interval=5m"
    async with aiohttp.ClientSession() as session, session.get(recorded_url + KLINES + query) as response:
        assert response.status == 400
        assert await response.json() == {"code": -1101, "msg": "Duplicate values for a parameter detected."}


async def test_unknown_path_is_404(recorded_url: str) -> None:
    async with aiohttp.ClientSession() as session, session.get(recorded_url + "/api/v3/avgPrice") as response:
        assert response.status == 404


async def test_ping_time_and_exchange_info_shape(recorded_url: str) -> None:
    _, ping = await get_json(recorded_url, "/api/v3/ping")
    _, server_time = await get_json(recorded_url, "/api/v3/time")
    status, info = await get_json(recorded_url, "/api/v3/exchangeInfo", {"symbol": "XRPETH"})

    assert ping == {}
    assert isinstance(server_time["serverTime"], int)
    assert status == 200
    assert info["timezone"] == "UTC"
    assert {limit["rateLimitType"] for limit in info["rateLimits"]} >= {"REQUEST_WEIGHT", "ORDERS"}
    (symbol,) = info["symbols"]
    assert (symbol["symbol"], symbol["status"], symbol["baseAsset"], symbol["quoteAsset"]) == (
        "XRPETH",
        "TRADING",
        "XRP",
        "ETH",
    )
    assert symbol["isSpotTradingAllowed"] is True
    assert symbol["permissionSets"] == [["SPOT"]]
    assert {f["filterType"] for f in symbol["filters"]} >= {"PRICE_FILTER", "LOT_SIZE", "NOTIONAL"}
