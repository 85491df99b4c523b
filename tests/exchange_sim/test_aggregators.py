"""CoinGecko's `coins/markets` and CoinPaprika's `tickers` on the simulator: the coins are its USD
markets, priced at their last closed candle; keys and 429s as the providers answer them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import aiohttp
import pytest
from cryptoflow_exchange_sim import INTERVALS, KlineWindow, RandomWalkMarket, Simulator

START_MS = 1_704_067_200_000
NOW_MS = START_MS + 2 * 86_400_000 + 30_000  # mid-minute: the minute before is the last closed one
MARKET = RandomWalkMarket(["BTC/USDT", "ETH/USDT", "ETH/BTC", "FOO/USDT"], seed=3, start_ms=START_MS)
KEY = "cg-test-0123456789"


def last_close(symbol_id: str) -> float:
    """The close of the 1m candle that ended at the last whole minute before NOW_MS."""
    minute = NOW_MS - NOW_MS % 60_000 - 60_000
    (kline,) = MARKET.klines(symbol_id, INTERVALS["1m"], KlineWindow(minute, minute, 1), NOW_MS)
    assert kline.close_time < NOW_MS
    return float(Decimal(kline.close))


@pytest.fixture
async def simulator() -> AsyncIterator[Simulator]:
    sim = Simulator(MARKET, clock=lambda: NOW_MS, aggregator_key=KEY)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


async def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], object]:
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers or {}) as response:
        return response.status, dict(response.headers), await response.json()


async def test_coingecko_lists_the_usd_markets_by_market_cap_with_a_colliding_ticker(simulator: Simulator) -> None:
    url = f"{simulator.base_url}/api/v3/coins/markets?vs_currency=usd&per_page=250&page=1"
    status, _, rows = await get(url, {"x-cg-demo-api-key": KEY})
    assert status == 200 and isinstance(rows, list)
    by_id = {row["id"]: row for row in rows}
    # ETH/BTC is not a USD market; FOO has no known id: its ticker, lower case.
    assert set(by_id) == {"bitcoin", "ethereum", "foo", f"{rows[0]['id']}-classic"}
    assert by_id["bitcoin"]["symbol"] == "btc" and by_id["bitcoin"]["current_price"] == last_close("BTCUSDT")
    assert by_id["ethereum"]["current_price"] == last_close("ETHUSDT")
    assert [row["market_cap_rank"] for row in rows] == [1, 2, 3, 4]
    caps = [row["market_cap"] for row in rows[:3]]
    assert caps == sorted(caps, reverse=True)
    assert by_id["bitcoin"]["market_cap"] == round(
        by_id["bitcoin"]["current_price"] * by_id["bitcoin"]["circulating_supply"]
    )
    # The collision: another coin under the first one's ticker, worth a thousandth of it.
    clash = rows[-1]
    assert clash["symbol"] == rows[0]["symbol"] and clash["id"] != rows[0]["id"]
    assert clash["current_price"] == pytest.approx(rows[0]["current_price"] / 1000)
    assert rows[0]["last_updated"].endswith("Z")
    # Pages of per_page.
    status, _, second = await get(url.replace("per_page=250&page=1", "per_page=2&page=2"), {"x-cg-pro-api-key": KEY})
    assert status == 200 and [row["id"] for row in second] == [row["id"] for row in rows[2:4]]  # type: ignore[union-attr]


async def test_coinpaprika_tickers_quote_the_same_prices(simulator: Simulator) -> None:
    status, _, rows = await get(f"{simulator.base_url}/v1/tickers?quotes=USD", {"Authorization": KEY})
    assert status == 200 and isinstance(rows, list)
    by_id = {row["id"]: row for row in rows}
    assert by_id["btc-bitcoin"]["symbol"] == "BTC"
    assert by_id["btc-bitcoin"]["quotes"]["USD"]["price"] == last_close("BTCUSDT")
    assert by_id["eth-ethereum"]["quotes"]["USD"]["price"] == last_close("ETHUSDT")
    assert [row["rank"] for row in rows] == [1, 2, 3, 4]


async def test_a_request_without_the_key_is_refused_as_each_provider_refuses_it(simulator: Simulator) -> None:
    status, _, body = await get(f"{simulator.base_url}/api/v3/coins/markets?vs_currency=usd")
    assert status == 401 and body == {"status": {"error_code": 10002, "error_message": "API Key Missing"}}
    status, _, _ = await get(f"{simulator.base_url}/v1/tickers", {"Authorization": "wrong"})
    assert status == 401
    ok, _, _ = await get(f"{simulator.base_url}/api/v3/coins/markets?vs_currency=usd&x_cg_demo_api_key={KEY}")
    assert ok == 200


async def test_rate_limited_requests_get_429_with_retry_after_then_answers(simulator: Simulator) -> None:
    simulator.aggregators.rate_limited["coingecko"] = 2
    url = f"{simulator.base_url}/api/v3/coins/markets?vs_currency=usd"
    answers = [await get(url, {"x-cg-demo-api-key": KEY}) for _ in range(3)]
    assert [status for status, _, _ in answers] == [429, 429, 200]
    assert answers[0][1]["Retry-After"] == "1"
    assert answers[0][2]["status"]["error_code"] == 429  # type: ignore[index]
    # The other provider is not limited.
    status, _, _ = await get(f"{simulator.base_url}/v1/tickers", {"Authorization": KEY})
    assert status == 200
    assert simulator.aggregators.statuses == {"coingecko.429": 2, "coingecko.200": 1, "coinpaprika.200": 1}
