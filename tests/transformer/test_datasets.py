"""Every dataset through transform_object: real recorded responses plus deliberately broken rows.

Good rows land in silver, each broken row is in quarantine with its one reason, and BatchReady's
quality score and per-check failure counts match what the test counts on its own.
"""

from __future__ import annotations

import io
from collections import Counter
from typing import Any

import polars as pl
from cryptoflow_contracts import Dataset, ObjectWritten, RawSnapshot
from cryptoflow_contracts.silver import OHLCV, ORDER_BOOKS, TICKERS, TRADES, SilverTable
from cryptoflow_runtime.lake import FileLake
from cryptoflow_transformer.batches import TransformResult, transform_object
from cryptoflow_transformer.silver_files import read_silver

from .bronze import ccxt_parsed, recorded_candles, snapshot, write_bronze

TICKER = ccxt_parsed("fetchTicker")[0]["parsedResponse"]
SPOT_BOOK = ccxt_parsed("fetchOrderBook")[0]["parsedResponse"]
SWAP_BOOK = ccxt_parsed("fetchOrderBook")[1]["parsedResponse"]
TRADE = ccxt_parsed("fetchTrades")[0]["parsedResponse"][0]
T0 = TICKER["timestamp"]  # 2024-03-13T11:10:45.391Z


async def transform_one(lake: FileLake, snapshots: list[RawSnapshot]) -> tuple[ObjectWritten, TransformResult]:
    (written,) = await write_bronze(lake, snapshots)
    return written, await transform_object(lake, written)


async def silver_rows(lake: FileLake, result: TransformResult, table: SilverTable) -> pl.DataFrame:
    assert result.batch is not None
    assert result.batch.table == table.name
    return read_silver(await lake.get(result.batch.key), table)


async def quarantine_rows(lake: FileLake, result: TransformResult) -> pl.DataFrame:
    assert result.quarantine is not None
    return pl.read_parquet(io.BytesIO(await lake.get(result.quarantine.details["quarantine_key"])))


def reasons_by_event(quarantine: pl.DataFrame) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for event_id, reason in quarantine.select("source_event_id", "reason").iter_rows():
        found.setdefault(event_id, []).append(reason)
    return found


def assert_scores(result: TransformResult, good: int, bad: Counter[str]) -> None:
    assert result.batch is not None
    assert result.batch.rows == good
    assert result.batch.quarantined_rows == sum(bad.values())
    assert result.batch.quality_score == good / (good + sum(bad.values()))
    assert result.batch.check_failures == dict(bad)
    assert result.quarantine is not None
    assert result.quarantine.error_type == "RowsQuarantined"
    assert result.quarantine.details["check_failures"] == dict(bad)


# --- ticker ---------------------------------------------------------------------------------------


def ticker(ts: int | None, **changes: Any) -> dict[str, Any]:
    return {**TICKER, "timestamp": ts, **changes}


async def test_tickers(lake: FileLake) -> None:
    good = [
        snapshot(Dataset.TICKER, TICKER, first_ts=T0),
        # No exchange time: the snapshot's (fetch) time stands in.
        snapshot(Dataset.TICKER, ticker(None), first_ts=T0 + 60_000),
        snapshot(Dataset.TICKER, ticker(T0 + 1, bid=None, ask=None), first_ts=T0 + 1),  # no book side: allowed
    ]
    broken = {
        "bid_above_ask": snapshot(Dataset.TICKER, ticker(T0 + 2, bid=73369.85), first_ts=T0 + 2),
        "last_outside_range": snapshot(Dataset.TICKER, ticker(T0 + 3, last=73650.26), first_ts=T0 + 3),
        "non_positive_price": snapshot(Dataset.TICKER, ticker(T0 + 4, low=0), first_ts=T0 + 4),
        "negative_volume": snapshot(Dataset.TICKER, ticker(T0 + 5, baseVolume=-1.0), first_ts=T0 + 5),
        "unparsable_number": snapshot(Dataset.TICKER, ticker(T0 + 6, ask="n/a"), first_ts=T0 + 6),
        "null_ts": snapshot(Dataset.TICKER, ticker(None), first_ts=None, fetched_ms=T0),
        "symbol_mismatch": snapshot(Dataset.TICKER, ticker(T0 + 7, symbol="ETH/USDT"), first_ts=T0 + 7),
        "malformed_ticker": snapshot(Dataset.TICKER, [TICKER], first_ts=T0 + 8),
    }
    _, result = await transform_one(lake, [*good, *broken.values()])

    silver = await silver_rows(lake, result, TICKERS)
    expected = [
        (T0, TICKER["bid"], TICKER["ask"], TICKER["last"]),
        (T0 + 1, None, None, TICKER["last"]),
        (T0 + 60_000, TICKER["bid"], TICKER["ask"], TICKER["last"]),
    ]
    assert silver.select(pl.col("ts").dt.epoch("ms"), "bid", "ask", "last").rows() == expected
    assert silver.row(0, named=True) | {"ts": None} == {
        "exchange": "binance",
        "symbol": "BTC/USDT",
        "ts": None,
        "bid": 73369.83,
        "ask": 73369.84,
        "last": 73369.84,
        "high": 73650.25,
        "low": 68620.82,
        "base_volume": 72140.348628,
        "quote_volume": 5167027510.687287,
        "source_event_id": good[0].event_id,
    }
    quarantined = reasons_by_event(await quarantine_rows(lake, result))
    assert quarantined == {s.event_id: [reason] for reason, s in broken.items()}
    assert_scores(result, good=3, bad=Counter(list(broken)))


# --- order book -----------------------------------------------------------------------------------


def book(**changes: Any) -> dict[str, Any]:
    return {**SPOT_BOOK, **changes}


async def test_order_books(lake: FileLake) -> None:
    good = snapshot(Dataset.ORDERBOOK, SPOT_BOOK, first_ts=T0)  # ccxt gives no time for Binance spot
    crossed = snapshot(Dataset.ORDERBOOK, book(bids=[[42574.32, 1.0], [42574.2, 1.0]]), first_ts=T0 + 1)
    unsorted = snapshot(Dataset.ORDERBOOK, book(asks=[[42574.8, 1.0], [42574.31, 1.0]]), first_ts=T0 + 2)
    level_tie = snapshot(Dataset.ORDERBOOK, book(bids=[[42574.3, 1.0], [42574.3, 2.0]]), first_ts=T0 + 3)
    bad_size = snapshot(Dataset.ORDERBOOK, book(bids=[[42574.3, 0.0107], [42574.2, 0]]), first_ts=T0 + 4)
    malformed = snapshot(Dataset.ORDERBOOK, book(bids={"42574.3": 0.0107}), first_ts=T0 + 5)
    _, result = await transform_one(lake, [good, crossed, unsorted, level_tie, bad_size, malformed])

    silver = await silver_rows(lake, result, ORDER_BOOKS)
    assert silver.select(pl.col("ts").dt.epoch("ms"), "side", "level", "price", "amount").rows() == [
        (T0, "ask", 0, 42574.31, 0.0087),
        (T0, "ask", 1, 42574.8, 0.00893),
        (T0, "bid", 0, 42574.3, 0.0107),
        (T0, "bid", 1, 42574.2, 0.00646),
    ]
    quarantine = await quarantine_rows(lake, result)
    by_event = reasons_by_event(quarantine)
    assert sorted(by_event[crossed.event_id]) == ["crossed_book"] * 4
    assert sorted(by_event[unsorted.event_id]) == ["asks_not_ascending"] * 4
    assert sorted(by_event[level_tie.event_id]) == ["bids_not_descending"] * 4  # strictly descending
    incomplete = "incomplete_book: another level was rejected"
    assert sorted(by_event[bad_size.event_id]) == sorted([incomplete] * 3 + ["non_positive_size"])
    bad_level = quarantine.filter(pl.col("reason") == "non_positive_size").row(0, named=True)
    assert (bad_level["side"], bad_level["level"], bad_level["price"]) == ("bid", 1, 42574.2)
    assert by_event[malformed.event_id] == ["malformed_order_book"]
    assert_scores(
        result,
        good=4,
        bad=Counter(
            {
                "crossed_book": 4,
                "asks_not_ascending": 4,
                "bids_not_descending": 4,
                "incomplete_book": 3,
                "non_positive_size": 1,
                "malformed_order_book": 1,
            }
        ),
    )


async def test_order_book_with_exchange_time_and_five_levels(lake: FileLake) -> None:
    swap = snapshot(Dataset.ORDERBOOK, SWAP_BOOK, symbol="BTC/USDT:USDT", first_ts=SWAP_BOOK["timestamp"])
    _, result = await transform_one(lake, [swap])
    silver = await silver_rows(lake, result, ORDER_BOOKS)
    bids = silver.filter(pl.col("side") == "bid").sort("level")
    asks = silver.filter(pl.col("side") == "ask").sort("level")
    assert bids.select("price", "amount").rows() == [tuple(level) for level in SWAP_BOOK["bids"]]
    assert asks.select("price", "amount").rows() == [tuple(level) for level in SWAP_BOOK["asks"]]
    assert set(silver["ts"].dt.epoch("ms")) == {1706803917258}
    assert result.quarantine is None
    assert result.batch is not None and result.batch.quality_score == 1.0 and result.batch.check_failures == {}


# --- trades ---------------------------------------------------------------------------------------


def trade(trade_id: str | None, **changes: Any) -> dict[str, Any]:
    return {**TRADE, "id": trade_id, **changes}


async def test_trades(lake: FileLake) -> None:
    ts = TRADE["timestamp"]
    first_page = snapshot(Dataset.TRADES, [TRADE], first_ts=ts)
    good_sell = trade("2913537568", side="sell", timestamp=ts + 5, price=73238.6, amount=0.5)
    broken = {
        "bad_side": trade("b1", side="hold"),
        "non_positive_price": trade("b2", price=0),
        "non_positive_amount": trade("b3", amount=-0.1),
        "unparsable_number": trade("b4", price="73,238.7"),
        "null_field": trade("b5", timestamp=None),
        "null_trade_id": trade(None),
        "symbol_mismatch": trade("b6", symbol="ETH/USDT"),
        "malformed_trade": None,
    }
    # The second page overlaps the first (the boundary trade again), as consecutive fetches do.
    second_page = snapshot(Dataset.TRADES, [TRADE, good_sell, *broken.values()], first_ts=ts, last_ts=ts + 5)
    _, result = await transform_one(lake, [first_page, second_page])

    silver = await silver_rows(lake, result, TRADES)
    assert silver.select("trade_id", pl.col("ts").dt.epoch("ms"), "price", "amount", "side").rows() == [
        ("2913537567", ts, 73238.7, 0.00109, "buy"),
        ("2913537568", ts + 5, 73238.6, 0.5, "sell"),
    ]
    assert result.duplicates == 1  # the boundary trade, deduplicated by id, not rejected
    quarantine = await quarantine_rows(lake, result)
    assert sorted(quarantine["reason"].to_list()) == sorted(broken)
    by_id = dict(quarantine.filter(pl.col("trade_id").is_not_null()).select("trade_id", "reason").iter_rows())
    assert by_id == {"b1": "bad_side", "b2": "non_positive_price", "b3": "non_positive_amount",
                     "b4": "unparsable_number", "b5": "null_field", "b6": "symbol_mismatch"}  # fmt: skip
    assert_scores(result, good=2, bad=Counter(list(broken)))


# --- ohlcv ----------------------------------------------------------------------------------------


async def test_ohlcv(lake: FileLake) -> None:
    candles = recorded_candles("XRPETH-1m.csv").head(50)
    rows = [list(r) for r in candles.rows()]
    ts = rows[-1][0] + 60_000
    o, h, low, c = 0.0014, 0.0015, 0.0013, 0.00145
    broken = {
        "high_below_open_close": [ts, o, 0.00141, low, c, 1.0],
        "low_above_open_close": [ts + 60_000, o, h, 0.00142, c, 1.0],
        "non_positive_price": [ts + 120_000, o, h, 0.0, c, 1.0],
        "negative_volume": [ts + 180_000, o, h, low, c, -1.0],
        "ts_not_aligned_to_timeframe": [ts + 240_001, o, h, low, c, 1.0],
        "null_field": [ts + 300_000, o, None, low, c, 1.0],
        "malformed_row": [ts + 360_000, o, h, low, c],
    }
    page = snapshot(Dataset.OHLCV, rows + list(broken.values()), symbol="XRP/ETH", timeframe="1m",
                    first_ts=rows[0][0], last_ts=ts + 360_000)  # fmt: skip
    _, result = await transform_one(lake, [page])

    silver = await silver_rows(lake, result, OHLCV)
    assert silver.select(pl.col("ts").dt.epoch("ms"), "open", "high", "low", "close", "volume").rows() == candles.rows()
    assert silver["resampled"].to_list() == [False] * 50 and silver["final"].to_list() == [True] * 50
    quarantine = await quarantine_rows(lake, result)
    assert [r.split(":")[0] for r in quarantine["reason"]] == list(broken)
    assert_scores(result, good=50, bad=Counter(list(broken)))
