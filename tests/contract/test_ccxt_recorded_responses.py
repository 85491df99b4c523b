"""Issue 11: the parse path for exchanges the simulator does not speak, on ccxt's own recorded responses.

Each fixture (tests/fixtures/ccxt_static/, provenance in its README) holds real response bodies
that ccxt recorded from an exchange (`httpResponse`) and what ccxt parsed them into
(`parsedResponse`). Two things are proven per entry:

1. `cryptoflow_native.replay` — the offline parse that re-derives silver from exchange-native
   bronze — gives ccxt's recorded result for the recorded body, by ccxt's own comparison rules;
2. that result, through the code the pipeline runs on it (the extractor's validation, a bronze
   RawSnapshot as the extractor publishes it, the transformer's checks), becomes silver rows whose
   values are ccxt's recorded values: nothing quarantined, nothing lost, nothing altered.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ccxt
import polars as pl
import pytest
from cryptoflow_contracts import Dataset, NativeCall, NativeResponse, RawSnapshot
from cryptoflow_extractor.validation import validate_ohlcv, validate_order_book, validate_ticker, validate_trades
from cryptoflow_native import RecordedCall, ReplayError, complete, json_safe, replay
from cryptoflow_transformer.datasets import TRANSFORMS
from cryptoflow_transformer.native import unified_bronze

from .ccxt_equal import ccxt_mismatch

FIXTURES = Path(__file__).parent.parent / "fixtures" / "ccxt_static"
DATASETS = {
    "fetchOHLCV": Dataset.OHLCV,
    "fetchTrades": Dataset.TRADES,
    "fetchTicker": Dataset.TICKER,
    "fetchOrderBook": Dataset.ORDERBOOK,
}


def fixtures() -> dict[str, dict[str, Any]]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(FIXTURES.glob("*.json"))}


def recorded_entries() -> list[Any]:
    return [
        pytest.param(exchange, entry, id=f"{exchange}-{method}-{n}")
        for exchange, fixture in fixtures().items()
        for method, entries in fixture["methods"].items()
        for n, entry in enumerate(entries)
    ]


def recorded_call(exchange: str, entry: dict[str, Any]) -> RecordedCall:
    fixture = fixtures()[exchange]
    return RecordedCall(
        exchange_id=exchange,
        method=entry["method"],
        args=entry["input"],
        bodies=[entry["httpResponse"]],
        markets=fixture["markets"],
        options={**fixture["options"], **entry.get("options", {})},
    )


def test_at_least_eight_exchanges_beyond_the_simulated_ones_with_every_dataset_covered() -> None:
    covered = {exchange: set(fixture["methods"]) for exchange, fixture in fixtures().items()}
    assert len(set(covered) - {"binance", "bybit", "gate"}) >= 8, covered
    for method in DATASETS:
        assert sum(method in methods for methods in covered.values()) >= 3, method


@pytest.mark.parametrize(("exchange", "entry"), recorded_entries())
def test_the_offline_parse_gives_what_ccxt_recorded(exchange: str, entry: dict[str, Any]) -> None:
    result = replay(recorded_call(exchange, entry))
    skip = fixtures()[exchange]["skipKeys"]
    assert ccxt_mismatch(getattr(ccxt, exchange)(), result, entry["parsedResponse"], skip) is None


@pytest.mark.parametrize(("exchange", "entry"), recorded_entries())
def test_the_pipeline_turns_a_recorded_response_into_silver_rows_equal_to_ccxts(
    exchange: str, entry: dict[str, Any]
) -> None:
    symbol = entry["input"][0]
    if ":" in symbol:
        pytest.skip(f"{symbol} is a derivative market; the pipeline collects spot markets")
    dataset = DATASETS[entry["method"]]
    result = replay(recorded_call(exchange, entry))
    rows = silver_rows(exchange, symbol, dataset, entry, result)
    expected = expected_rows(exchange, dataset, entry["parsedResponse"])
    assert rows.height == len(expected) > 0
    if dataset is Dataset.ORDERBOOK:
        rows = rows.sort("side", "level")
        expected.sort(key=lambda row: (row["side"], row["level"]))
    for got, want in zip(rows.iter_rows(named=True), expected, strict=True):
        for column, value in want.items():
            assert (
                got[column] == pytest.approx(value, rel=1e-12) if isinstance(value, float) else got[column] == value
            ), (
                column,
                got,
                want,
            )


def native_call(exchange: str, symbol: str, entry: dict[str, Any]) -> NativeCall:
    fixture = fixtures()[exchange]
    return NativeCall(
        ccxt_version=ccxt.__version__,
        method=entry["method"],
        args=entry["input"],
        market=json_safe(fixture["markets"].get(symbol)),
        options={**fixture["options"], **entry.get("options", {})},
        responses=[NativeResponse(method="GET", path="/recorded", status=200, body=json.dumps(entry["httpResponse"]))],
    )


def silver_rows(
    exchange: str, symbol: str, dataset: Dataset, entry: dict[str, Any], result: Any, payload: Any = None
) -> pl.DataFrame:
    """What the extractor publishes for this result and the transformer makes of it."""
    if dataset is Dataset.OHLCV:
        candles = validate_ohlcv(result)
        first, last = candles[0].ts, candles[-1].ts
    elif dataset is Dataset.TRADES:
        result = complete(exchange, "fetchTrades", result)  # what the trades job publishes
        trades = validate_trades(result)
        first, last = min(t.timestamp for t in trades), max(t.timestamp for t in trades)
    else:
        parsed = validate_ticker(result) if dataset is Dataset.TICKER else validate_order_book(result)
        first = last = parsed.timestamp or int(datetime.now(UTC).timestamp() * 1000)
    snapshot = RawSnapshot(
        schema_version=2,
        # What the extractor records of the call: the exchange's body as received.
        native=[native_call(exchange, symbol, entry)],
        dataset=dataset,
        exchange=exchange,
        symbol=symbol,
        timeframe=(entry["input"][1] if len(entry["input"]) > 1 else "1m") if dataset is Dataset.OHLCV else None,
        fetched_at=datetime.now(UTC),
        request={"args": entry["input"]},
        # ccxt's result at fetch time; the transformer parses the native body instead.
        payload=payload if payload is not None else result,
        first_ts=first,
        last_ts=last,
    )
    checked = TRANSFORMS[dataset].check(unified_bronze(snapshot.to_json() + b"\n"))
    assert checked.rejected.is_empty(), checked.rejected.to_dicts()[:3]
    assert checked.duplicates == 0
    return checked.good


# ccxt leaves KuCoin's trades without an id; the exchange's own `sequence` identifies them.
TRADE_IDS_FROM_INFO = {"kucoin": "sequence"}


def expected_rows(exchange: str, dataset: Dataset, parsed: Any) -> list[dict[str, Any]]:
    """ccxt's recorded values, named as the silver columns, in the order the rows come out."""

    def trade_id(trade: dict[str, Any]) -> str:
        return str(trade["id"] if trade["id"] is not None else trade["info"][TRADE_IDS_FROM_INFO[exchange]])

    def number(value: Any) -> float | None:
        return None if value is None else float(value)

    if dataset is Dataset.OHLCV:
        names = ("open", "high", "low", "close", "volume")
        return [{"ts": _ts(row[0]), **{n: number(v) for n, v in zip(names, row[1:], strict=True)}} for row in parsed]
    if dataset is Dataset.TRADES:
        trades = sorted(parsed, key=lambda t: (t["timestamp"], trade_id(t)))
        return [
            {
                "trade_id": trade_id(t),
                "ts": _ts(t["timestamp"]),
                "price": number(t["price"]),
                "amount": number(t["amount"]),
                "side": t["side"],
            }
            for t in trades
        ]
    if dataset is Dataset.TICKER:
        return [{"last": number(parsed["last"]), "bid": number(parsed["bid"]), "ask": number(parsed["ask"])}]
    return [
        {"side": side, "level": level, "price": number(price), "amount": number(amount)}
        for side, levels in (("bid", parsed["bids"]), ("ask", parsed["asks"]))
        for level, (price, amount, *_) in enumerate(levels)
    ]


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def test_a_replay_that_asks_for_more_than_was_recorded_says_so() -> None:
    exchange, entry = "kraken", fixtures()["kraken"]["methods"]["fetchOHLCV"][0]
    call = recorded_call(exchange, entry)
    with pytest.raises(ReplayError, match="made more requests than the 0 recorded"):
        replay(RecordedCall(call.exchange_id, call.method, call.args, [], call.markets))
    with pytest.raises(ReplayError, match="unknown exchange 'nosuchexchange'"):
        replay(RecordedCall("nosuchexchange", call.method, call.args, call.bodies, call.markets))


def test_silver_is_parsed_from_the_native_body_not_from_the_payload() -> None:
    """A version 2 snapshot's payload is what ccxt returned when the page was fetched; silver
    comes from the exchange's body parsed now. Here the payload is off by one everywhere: silver
    still holds the exchange's values."""
    exchange, entry = "kraken", fixtures()["kraken"]["methods"]["fetchOHLCV"][0]
    result = replay(recorded_call(exchange, entry))
    stale = [[row[0], *(float(v) + 1 for v in row[1:])] for row in result]
    rows = silver_rows(exchange, entry["input"][0], Dataset.OHLCV, entry, result, payload=stale)
    assert rows["close"].to_list() == [float(row[4]) for row in entry["parsedResponse"]]
