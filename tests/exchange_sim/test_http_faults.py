"""Every HTTP fault kind, as ccxt meets it, and the control surface that plans and counts them."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import ccxt.async_support as ccxt
import pytest
from cryptoflow_exchange_sim import (
    CsvCandleMarket,
    FaultyMarket,
    MalformedCandle,
    Simulator,
    parse_fault_spec,
    running_simulator,
)

from .clients import CANDLES, EXCHANGES, TRADES, ccxt_client, http_get, http_send

MARKET = CsvCandleMarket(CANDLES, TRADES)
SINCE = 1_570_752_000_000  # the first recorded XRP/ETH minute
FIRST_CANDLE = [SINCE, 0.00141342, 0.00141557, 0.00141266, 0.00141418, 1482.0]
OHLCV_PATH = {"binance": "/api/v3/klines", "bybit": "/v5/market/kline", "gate": "/api/v4/spot/candlesticks"}
OHLCV_QUERY = {
    "binance": {"symbol": "XRPETH", "interval": "1m", "startTime": str(SINCE), "limit": "2"},
    "bybit": {"category": "spot", "symbol": "XRPETH", "interval": "1", "start": str(SINCE), "limit": "2"},
    "gate": {"currency_pair": "XRP_ETH", "interval": "1m", "from": str(SINCE // 1000), "to": str(SINCE // 1000 + 60)},
}
RATE_LIMITED = {"binance": ccxt.DDoSProtection, "bybit": ccxt.RateLimitExceeded, "gate": ccxt.RateLimitExceeded}


async def _first_candle(exchange: Any) -> list[float]:
    candles = await exchange.fetch_ohlcv("XRP/ETH", "1m", since=SINCE, limit=1)
    return candles[0]  # type: ignore[no-any-return]


async def _stats(base_url: str) -> dict[str, Any]:
    _, stats = await http_get(base_url, "/_sim/stats")
    return stats  # type: ignore[no-any-return]


@pytest.mark.parametrize("exchange_id", EXCHANGES)
async def test_rate_limit_is_ccxt_rate_limit_error_with_retry_after(exchange_id: str) -> None:
    fault = parse_fault_spec("rate_limit:ohlcv:retry_after=2")
    async with running_simulator(MARKET, exchanges=EXCHANGES, faults=[fault]) as url:
        async with ccxt_client(exchange_id, url) as exchange:
            await exchange.load_markets()
            with pytest.raises(RATE_LIMITED[exchange_id]):
                await _first_candle(exchange)
            retry_after = exchange.last_response_headers["Retry-After"]
            assert await _first_candle(exchange) == FIRST_CANDLE
        stats = await _stats(url)

    assert retry_after == "2"
    endpoint = f"{exchange_id}.ohlcv"
    assert stats["requests"][endpoint] == 2
    assert stats["faults_served"] == {endpoint: {"rate_limit": 1}}
    refused = {"binance": "429", "bybit": "200", "gate": "429"}[exchange_id]  # Bybit: retCode 10006 in a 200
    assert stats["statuses"][endpoint] == ({"200": 2} if refused == "200" else {refused: 1, "200": 1})
    assert [entry["faults"] for entry in stats["log"] if entry["endpoint"] == endpoint] == [["rate_limit"], []]


async def test_binance_ban_and_bybit_gateway_refusal() -> None:
    faults = [parse_fault_spec("rate_limit:binance.ohlcv:status=418,retry_after=30"),
              parse_fault_spec("rate_limit:bybit.ohlcv:status=403")]  # fmt: skip
    async with running_simulator(MARKET, exchanges=EXCHANGES, faults=faults) as url:
        async with ccxt_client("binance", url) as binance, ccxt_client("bybit", url) as bybit:
            with pytest.raises(ccxt.DDoSProtection, match="banned until"):
                await _first_candle(binance)
            with pytest.raises(ccxt.RateLimitExceeded, match="access too frequent"):
                await _first_candle(bybit)
            assert binance.last_response_headers["Retry-After"] == "30"


@pytest.mark.parametrize("exchange_id", EXCHANGES)
async def test_server_error_burst_then_recovery(exchange_id: str) -> None:
    async with running_simulator(
        MARKET, exchanges=EXCHANGES, faults=[parse_fault_spec("server_error:ohlcv:count=3,status=502")]
    ) as url:
        async with ccxt_client(exchange_id, url) as exchange:
            await exchange.load_markets()
            for _ in range(3):
                with pytest.raises(ccxt.ExchangeNotAvailable):
                    await _first_candle(exchange)
            assert await _first_candle(exchange) == FIRST_CANDLE
        stats = await _stats(url)

    assert stats["statuses"][f"{exchange_id}.ohlcv"] == {"502": 3, "200": 1}


async def test_server_error_with_the_exchanges_own_body() -> None:
    async with running_simulator(
        MARKET, exchanges=EXCHANGES, faults=[parse_fault_spec("server_error:ohlcv:count=always,body=native")]
    ) as url:
        answers = {name: await http_get(url, OHLCV_PATH[name], OHLCV_QUERY[name]) for name in EXCHANGES}
        async with ccxt_client("gate", url) as gate:
            with pytest.raises(ccxt.ExchangeNotAvailable):
                await _first_candle(gate)

    assert answers["binance"] == (
        503,
        {
            "code": -1008,
            "msg": "Server is currently overloaded with other requests. Please try again in a few minutes.",
        },
    )
    status, body = answers["bybit"]
    assert (status, body["retCode"], body["retMsg"]) == (503, 10016, "Internal server error.")
    assert answers["gate"] == (503, {"label": "SERVER_ERROR", "message": "Internal server error"})


async def test_delay_beyond_the_client_timeout_is_request_timeout() -> None:
    async with running_simulator(
        MARKET, exchanges=EXCHANGES, faults=[parse_fault_spec("delay:gate.ohlcv:seconds=0.6")]
    ) as url:
        async with ccxt_client("gate", url, timeout_ms=250) as exchange:
            await exchange.load_markets()
            with pytest.raises(ccxt.RequestTimeout):
                await _first_candle(exchange)
            assert await _first_candle(exchange) == FIRST_CANDLE


async def test_delay_within_the_timeout_only_slows_the_answer() -> None:
    async with running_simulator(
        MARKET, exchanges=EXCHANGES, faults=[parse_fault_spec("delay:ohlcv:seconds=0.3")]
    ) as url:
        async with ccxt_client("bybit", url) as exchange:
            await exchange.load_markets()
            started = time.monotonic()
            assert await _first_candle(exchange) == FIRST_CANDLE
            assert time.monotonic() - started >= 0.3


@pytest.mark.parametrize("exchange_id", EXCHANGES)
async def test_truncated_body_cut_connection_makes_ccxt_raise(exchange_id: str) -> None:
    async with running_simulator(
        MARKET, exchanges=EXCHANGES, faults=[parse_fault_spec("truncate:*:count=always")]
    ) as url:
        async with ccxt_client(exchange_id, url) as exchange:
            with pytest.raises(ccxt.ExchangeError):
                await exchange.load_markets()


async def test_truncated_json_in_a_complete_answer_is_not_an_error_to_ccxt() -> None:
    async with running_simulator(
        MARKET, exchanges=EXCHANGES, faults=[parse_fault_spec("truncate:ohlcv:cut=body,count=always")]
    ) as url:
        async with (
            aiohttp.ClientSession() as session,
            session.get(url + OHLCV_PATH["binance"], params=OHLCV_QUERY["binance"]) as response,
        ):
            raw = await response.read()
        async with ccxt_client("binance", url) as exchange:
            candles = await exchange.fetch_ohlcv("XRP/ETH", "1m", since=SINCE, limit=2)
            last_json = exchange.last_json_response

    assert response.status == 200
    assert raw.startswith(b"[[1570752000000,") and not raw.endswith(b"]]")
    # ccxt hands the unparsable text to its parser and gets nothing: only the caller can notice.
    assert (candles, last_json) == ([], None)


@pytest.mark.parametrize(("exchange_id", "row_length"), [("binance", 11), ("bybit", 6), ("gate", 7)])
async def test_missing_kline_column_shifts_what_ccxt_reads(exchange_id: str, row_length: int) -> None:
    async with running_simulator(
        MARKET, exchanges=EXCHANGES, faults=[parse_fault_spec("drop_field:ohlcv:field=close,count=always")]
    ) as url:
        _, body = await http_get(url, OHLCV_PATH[exchange_id], OHLCV_QUERY[exchange_id])
        async with ccxt_client(exchange_id, url) as exchange:
            candle = await _first_candle(exchange)

    rows = body["result"]["list"] if exchange_id == "bybit" else body
    assert {len(row) for row in rows} == {row_length}
    assert candle[0] == SINCE
    assert candle != FIRST_CANDLE


@pytest.mark.parametrize(
    ("exchange_id", "bid_key"), [("binance", "bidPrice"), ("bybit", "bid1Price"), ("gate", "highest_bid")]
)
async def test_missing_ticker_key_and_unknown_trade_key(exchange_id: str, bid_key: str) -> None:
    faults = [
        parse_fault_spec(f"drop_field:ticker:field={bid_key}"),
        parse_fault_spec("add_field:trades:field=surprise,value=42"),
    ]
    async with running_simulator(MARKET, exchanges=EXCHANGES, faults=faults) as url:
        async with ccxt_client(exchange_id, url) as exchange:
            ticker = await exchange.fetch_ticker("XRP/ETH")
            trades = await exchange.fetch_trades("XRP/ETH", limit=5)
            second = await exchange.fetch_ticker("XRP/ETH")

    assert bid_key not in ticker["info"]
    assert ticker["bid"] is None and ticker["last"] == 0.00152787
    assert {trade["info"]["surprise"] for trade in trades} == {42}
    assert second["bid"] == 0.00152772  # count=1: the next ticker is whole again


async def test_after_and_count_pick_exactly_which_requests_fail() -> None:
    async with running_simulator(
        MARKET, exchanges=EXCHANGES, faults=[parse_fault_spec("rate_limit:gate.ohlcv:after=2,count=2")]
    ) as url:
        statuses = [(await http_get(url, OHLCV_PATH["gate"], OHLCV_QUERY["gate"]))[0] for _ in range(5)]
        binance_status, _ = await http_get(url, OHLCV_PATH["binance"], OHLCV_QUERY["binance"])
        _, faults = await http_get(url, "/_sim/faults")

    assert statuses == [200, 200, 429, 429, 200]
    assert binance_status == 200  # gate.ohlcv only
    assert (faults["faults"][0]["seen"], faults["faults"][0]["served"], faults["faults"][0]["remaining"]) == (4, 2, 0)


async def test_a_path_fault_does_not_touch_the_root_alias() -> None:
    async with running_simulator(MARKET, faults=[parse_fault_spec("server_error:/api/v3/klines:count=always")]) as url:
        prefixed, _ = await http_get(url, "/api/v3/klines", OHLCV_QUERY["binance"])
        bare, _ = await http_get(url, "/klines", OHLCV_QUERY["binance"])

    assert (prefixed, bare) == (503, 200)


async def test_delay_and_body_faults_compose_on_one_request() -> None:
    faults = [parse_fault_spec("delay:trades:seconds=0.2"), parse_fault_spec("drop_field:trades:field=p"),
              parse_fault_spec("add_field:trades:field=x")]  # fmt: skip
    async with running_simulator(MARKET, faults=faults) as url:
        _, trades = await http_get(url, "/api/v3/aggTrades", {"symbol": "XRPETH", "limit": "3"})
        stats = await _stats(url)

    assert [sorted(trade) for trade in trades] == [["M", "T", "a", "f", "l", "m", "q", "x"]] * 3
    assert stats["log"][-1]["faults"] == ["delay", "drop_field", "add_field"]


async def test_control_endpoints_plan_and_count() -> None:
    async with running_simulator(MARKET, exchanges=EXCHANGES) as url:
        added = await http_send(
            "POST", url, "/_sim/faults", {"kind": "server_error", "endpoint": "bybit.ohlcv", "count": 2}
        )
        more = await http_send("POST", url, "/_sim/faults", {"faults": [{"kind": "rate_limit", "endpoint": "ticker"}]})
        refused = await http_send("POST", url, "/_sim/faults", {"kind": "explode", "endpoint": "*"})
        statuses = [(await http_get(url, OHLCV_PATH["bybit"], OHLCV_QUERY["bybit"]))[0] for _ in range(3)]
        replaced = await http_send(
            "PUT", url, "/_sim/faults", [{"kind": "truncate", "endpoint": "gate.*", "count": "always"}]
        )
        stats = await _stats(url)
        cleared = await http_send("DELETE", url, "/_sim/faults")
        reset = await http_send("DELETE", url, "/_sim/stats")
        after_reset = await _stats(url)

    assert added[0] == 200 and [f["kind"] for f in added[1]["faults"]] == ["server_error"]
    assert [f["kind"] for f in more[1]["faults"]] == ["server_error", "rate_limit"]
    assert refused[0] == 400 and "explode" in refused[1]["error"]
    assert statuses == [503, 503, 200]
    assert [(f["kind"], f["endpoint"], f["count"]) for f in replaced[1]["faults"]] == [("truncate", "gate.*", "always")]
    assert stats["requests"] == {"bybit.ohlcv": 3}  # control requests are not counted
    assert stats["paths"] == {"/v5/market/kline": 3}
    assert stats["faults_served"] == {"bybit.ohlcv": {"server_error": 2}}
    assert [entry["status"] for entry in stats["log"]] == [503, 503, 200]
    assert stats["log"][0]["query"].startswith("category=spot&symbol=XRPETH")
    assert (cleared, reset[0]) == ((200, {"faults": []}), 200)
    assert (after_reset["requests"], after_reset["log"], after_reset["faults"]) == ({}, [], [])


async def test_a_client_that_honours_retry_after_waits_that_long() -> None:
    simulator = Simulator(
        MARKET, exchanges=EXCHANGES, faults=[parse_fault_spec("rate_limit:gate.ticker:retry_after=1")]
    )
    url = await simulator.start()
    try:
        async with ccxt_client("gate", url) as exchange:
            await exchange.load_markets()
            while True:
                try:
                    ticker = await exchange.fetch_ticker("XRP/ETH")
                    break
                except ccxt.RateLimitExceeded:
                    await asyncio.sleep(int(exchange.last_response_headers["Retry-After"]))
    finally:
        await simulator.stop()

    log = [entry for entry in simulator.stats.log if entry["endpoint"] == "gate.ticker"]
    assert [entry["status"] for entry in log] == [429, 200]
    assert int(str(log[1]["t_ms"])) - int(str(log[0]["t_ms"])) >= 1000
    assert ticker["last"] == 0.00152787


async def test_binance_reports_used_weight() -> None:
    async with running_simulator(MARKET, clock=lambda: SINCE) as url, aiohttp.ClientSession() as session:
        used = []
        for path, params in [("/api/v3/klines", OHLCV_QUERY["binance"]), ("/api/v3/depth", {"symbol": "XRPETH"}),
                             ("/api/v3/exchangeInfo", {}), ("/api/v3/klines", {"symbol": "NOPE", "interval": "1m"})]:  # fmt: skip
            async with session.get(url + path, params=params) as response:
                used.append(response.headers["X-MBX-USED-WEIGHT-1M"])

    assert used == ["2", "7", "27", "29"]  # klines 2, depth(100) 5, exchangeInfo 20; refusals weigh too


@pytest.mark.parametrize("exchange_id", EXCHANGES)
async def test_a_malformed_candle_reaches_every_exchange(exchange_id: str) -> None:
    market = FaultyMarket(MARKET, [MalformedCandle("XRPETH", SINCE, "negative_volume")])
    async with running_simulator(market, exchanges=EXCHANGES) as url, ccxt_client(exchange_id, url) as exchange:
        candle = await _first_candle(exchange)

    assert candle[:5] == FIRST_CANDLE[:5]
    assert candle[5] < 0


async def test_the_most_requests_one_job_had_in_flight_at_once_are_counted_per_job() -> None:
    delay = parse_fault_spec("delay:ohlcv:seconds=0.3,count=always")
    async with running_simulator(MARKET, exchanges=EXCHANGES, faults=[delay]) as url:
        async with ccxt_client("binance", url) as one, ccxt_client("binance", url) as other:
            await one.load_markets()
            await other.load_markets()
            # Two clients polling the same job at once, then the same job one after the other.
            await asyncio.gather(_first_candle(one), _first_candle(other))
            await _first_candle(one)
            await one.fetch_ohlcv("XRP/ETH", "5m", since=SINCE, limit=1)
        stats = await _stats(url)
    assert stats["most_concurrent"]["binance.ohlcv XRPETH 1m"] == 2
    assert stats["most_concurrent"]["binance.ohlcv XRPETH 5m"] == 1
    assert stats["most_concurrent"]["binance.markets"] == 1
