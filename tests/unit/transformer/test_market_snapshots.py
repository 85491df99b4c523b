"""Aggregator pages → checked market_snapshots, aggregator_prices and aggregator_candles rows: parsed from
the bodies, bad records quarantined."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
from cryptoflow_contracts import Dataset, NativeCall, NativeResponse, RawSnapshot
from cryptoflow_native.aggregators import (
    COINGECKO_CHART_METHOD,
    COINGECKO_MARKETS_METHOD,
    COINGECKO_OHLC_METHOD,
    COINPAPRIKA_OHLCV_METHOD,
    COINPAPRIKA_TICKERS_METHOD,
)
from cryptoflow_transformer.datasets import TRANSFORMS
from cryptoflow_transformer.native import unified_bronze

FIXTURES = Path(__file__).parents[2] / "fixtures" / "aggregators"


def page(provider: str, method: str, body: str) -> bytes:
    snapshot = RawSnapshot(
        schema_version=2,
        dataset=Dataset.MARKET_SNAPSHOT,
        exchange=provider,
        symbol="MARKETS/USD",
        fetched_at=datetime(2024, 12, 31, 12, 5, 3, tzinfo=UTC),
        payload=None,
        native=[
            NativeCall(
                ccxt_version="4",
                method=method,
                args=[{}],
                responses=[NativeResponse(method="GET", path="/x", status=200, body=body)],
            )
        ],
    )
    return snapshot.to_json() + b"\n"


def check(ndjson: bytes):  # type: ignore[no-untyped-def]
    return TRANSFORMS[Dataset.MARKET_SNAPSHOT].check(unified_bronze(ndjson))


def test_a_coingecko_page_becomes_rows_keyed_by_provider_and_coin_id() -> None:
    body = (FIXTURES / "coingecko_markets.json").read_text()
    rows = check(page("coingecko", COINGECKO_MARKETS_METHOD, body))
    good = rows.good.sort("symbol")
    assert good["exchange"].to_list() == ["coingecko"] * 3
    assert good["symbol"].to_list() == ["batcat", "bitcoin", "ethereum"]
    assert good["asset_symbol"].to_list() == ["BTC", "BTC", "ETH"]
    bitcoin = good.row(1, named=True)
    assert bitcoin["ts"] == datetime(2024, 12, 31, 12, 4, 58, 113000, tzinfo=UTC)
    assert (bitcoin["price_usd"], bitcoin["market_cap_usd"], bitcoin["rank"]) == (97012.5, 1921771032710.0, 1)
    assert good.row(0, named=True)["rank"] is None
    assert rows.rejected.height == 0


def test_coins_with_bad_values_are_quarantined_with_their_reason_and_the_rest_pass() -> None:
    coins = orjson.loads((FIXTURES / "coinpaprika_tickers.json").read_bytes())
    broken_price = {**coins[0], "id": "bad-price", "quotes": {"USD": {**coins[0]["quotes"]["USD"], "price": "n/a"}}}
    no_time = {**coins[0], "id": "no-time", "last_updated": None}
    negative = {**coins[1], "id": "negative", "quotes": {"USD": {**coins[1]["quotes"]["USD"], "price": -1}}}
    body = orjson.dumps([*coins, broken_price, no_time, negative]).decode()
    rows = check(page("coinpaprika", COINPAPRIKA_TICKERS_METHOD, body))
    assert sorted(rows.good["symbol"].to_list()) == ["btc-bitcoin", "usdt-tether"]
    reasons = dict(zip(rows.rejected["symbol"].to_list(), rows.rejected["reason"].to_list(), strict=True))
    assert reasons == {"bad-price": "unparsable_number", "no-time": "null_ts", "negative": "non_positive_price"}


def test_a_body_that_is_not_a_listing_quarantines_the_page() -> None:
    rows = check(page("coingecko", COINGECKO_MARKETS_METHOD, '{"status": {"error_code": 10002}}'))
    assert rows.good.height == 0
    assert rows.rejected["reason"].to_list() == ["malformed_listing"]


def test_a_price_history_page_becomes_rows_of_its_coin_within_its_range() -> None:
    body = (
        '{"prices": [[1704067200000, 42261.0], [1704070800000, 0], [1704074400000, 42300.0], [1704078000000, 1.0]],'
        ' "market_caps": [[1704067200000, 8.2e11]], "total_volumes": [[1704067200000, 1.1e10]]}'
    )
    snapshot = orjson.loads(page("coingecko", COINGECKO_CHART_METHOD, body))
    # The page covers the first three points; the fourth belongs to the next page.
    snapshot |= {
        "dataset": "aggregator_price",
        "symbol": "bitcoin/USD",
        "request": {"asset_id": "bitcoin"},
        "first_ts": 1704067200000,
        "last_ts": 1704074400000,
    }
    rows = TRANSFORMS[Dataset.AGGREGATOR_PRICE].check(unified_bronze(orjson.dumps(snapshot) + b"\n"))
    assert rows.good.select("exchange", "symbol", "price_usd", "market_cap_usd").rows() == [
        ("coingecko", "bitcoin", 42261.0, 8.2e11),
        ("coingecko", "bitcoin", 42300.0, None),
    ]
    assert rows.rejected["reason"].to_list() == ["non_positive_price"]


def candle_page(provider: str, method: str, body: str, params: dict[str, str], first_ts: int, last_ts: int) -> bytes:
    coin = "bitcoin" if provider == "coingecko" else "btc-bitcoin"
    snapshot = RawSnapshot(
        schema_version=2,
        dataset=Dataset.AGGREGATOR_CANDLE,
        exchange=provider,
        symbol=f"{coin}/USD",
        timeframe="4h" if provider == "coingecko" else "1d",
        fetched_at=datetime(2024, 3, 3, 1, 0, tzinfo=UTC),
        request={"provider": provider, "asset_id": coin, **params},
        payload=None,
        first_ts=first_ts,
        last_ts=last_ts,
        native=[
            NativeCall(
                ccxt_version="4",
                method=method,
                args=[coin, params],
                responses=[NativeResponse(method="GET", path="/x", params=params, status=200, body=body)],
            )
        ],
    )
    return snapshot.to_json() + b"\n"


def test_a_candle_page_becomes_the_rows_of_its_closed_candles_in_its_coins_series() -> None:
    body = (FIXTURES / "coingecko_ohlc.json").read_text()
    # Published with the first three candles (open times 08:00, 12:00, 16:00 on 2024-03-02): the
    # fourth, closing at 2024-03-03T00:00Z, was still forming when the response came.
    ndjson = candle_page("coingecko", COINGECKO_OHLC_METHOD, body, {"days": "7"}, 1709366400000, 1709395200000)
    rows = TRANSFORMS[Dataset.AGGREGATOR_CANDLE].check(unified_bronze(ndjson))
    assert rows.good.select("exchange", "symbol", "timeframe", "ts", "open", "close", "volume").rows() == [
        ("coingecko", "bitcoin", "4h", datetime(2024, 3, 2, 8, tzinfo=UTC), 62012.41, 61905.77, None),
        ("coingecko", "bitcoin", "4h", datetime(2024, 3, 2, 12, tzinfo=UTC), 61905.77, 61870.02, None),
        ("coingecko", "bitcoin", "4h", datetime(2024, 3, 2, 16, tzinfo=UTC), 61870.02, 62129.6, None),
    ]
    assert rows.rejected.height == 0


def test_coinpaprika_candles_keep_volume_and_market_cap_and_bad_candles_are_quarantined() -> None:
    candles = orjson.loads((FIXTURES / "coinpaprika_ohlcv_historical.json").read_bytes())
    candles[1]["low"] = candles[1]["close"] + 1  # a low above the close
    candles[2]["open"] = "n/a"
    body = orjson.dumps(candles).decode()
    params = {"start": "2024-03-01", "end": "2024-03-03", "limit": "366"}
    ndjson = candle_page("coinpaprika", COINPAPRIKA_OHLCV_METHOD, body, params, 1709251200000, 1709424000000)
    rows = TRANSFORMS[Dataset.AGGREGATOR_CANDLE].check(unified_bronze(ndjson))
    assert rows.good.select("symbol", "timeframe", "ts", "high", "volume", "market_cap").rows() == [
        ("btc-bitcoin", "1d", datetime(2024, 3, 1, tzinfo=UTC), 63155.1, 40186368423.0, 1201617846410.0)
    ]
    assert sorted(rows.rejected["reason"].to_list()) == ["low_above_open_close", "unparsable_number"]
