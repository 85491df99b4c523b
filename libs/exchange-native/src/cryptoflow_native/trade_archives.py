"""Binance's trade and aggregate-trade archive CSVs (data.binance.vision `trades`, `aggTrades`), parsed.

A `trades` zip holds one CSV of the period's trades: trade id, price, qty, quoteQty, time,
isBuyerMaker, isBestMatch (spot; the futures files have no isBestMatch). An `aggTrades` zip: agg
trade id, price, qty, first trade id, last trade id, time, isBuyerMaker, isBestMatch (futures:
without the last). As with klines (`archives.py`), each file's variant is detected, never
configured: a header row or not, times in milliseconds or (spot, from 2025 on) microseconds.

`trade_records` gives the records the REST path makes of `/api/v3/historicalTrades` through ccxt:
the trade id as text, the time in ms, the taker's side (`sell` when the buyer was the maker),
price and amount as the file states them, and the maker side as `trade_maker_sides` reads it
from Binance's `isBuyerMaker` (`buy` when the buyer's order was resting). So an archived trade and
the same trade fetched by REST are the same silver row.
"""

from __future__ import annotations

import io
from typing import Any

import polars as pl

from .archives import MICROSECONDS_FROM, ArchiveError, has_header

ARCHIVE_TRADES_METHOD = "archiveTrades"
"""The `NativeCall.method` of a page read from a `trades` archive (its response body: CSV lines)."""
ARCHIVE_AGG_TRADES_METHOD = "archiveAggTrades"
"""The `NativeCall.method` of a page read from an `aggTrades` archive (its response body: CSV lines)."""

TRADE_COLUMNS = ("id", "price", "qty", "quote_qty", "time", "is_buyer_maker", "is_best_match")
AGG_TRADE_COLUMNS = (
    "agg_id", "price", "qty", "first_trade_id", "last_trade_id", "time", "is_buyer_maker", "is_best_match",
)  # fmt: skip
# Prices and amounts stay text, as the file states them: parsed once, downstream, like REST's.
_TYPES = {
    "id": pl.Int64, "agg_id": pl.Int64, "first_trade_id": pl.Int64, "last_trade_id": pl.Int64,
    "time": pl.Int64, "price": pl.Utf8, "qty": pl.Utf8, "quote_qty": pl.Utf8,
    "is_buyer_maker": pl.Utf8, "is_best_match": pl.Utf8,
}  # fmt: skip


def _frame(csv: bytes, columns: tuple[str, ...], what: str) -> pl.DataFrame:
    """The CSV's rows with `columns` (the last one optional: the futures files lack isBestMatch),
    times in milliseconds and isBuyerMaker a boolean."""
    schema = {name: _TYPES[name] for name in columns}
    if not csv.strip():
        return pl.DataFrame(schema={**schema, "is_buyer_maker": pl.Boolean})
    first_line = csv[: csv.find(b"\n")] if b"\n" in csv else csv
    width = first_line.count(b",") + 1
    if width not in (len(columns), len(columns) - 1):
        raise ArchiveError(f"expected {len(columns)} {what} columns, found {width}")
    names = list(columns[:width])
    try:
        frame = pl.read_csv(
            io.BytesIO(csv), has_header=False, skip_rows=1 if has_header(csv) else 0,
            new_columns=names, schema_overrides={name: schema[name] for name in names},
        )  # fmt: skip
    except (pl.exceptions.PolarsError, ValueError) as exc:
        raise ArchiveError(f"not Binance {what} CSV: {str(exc)[:300]}") from None
    if frame.width != width:
        raise ArchiveError(f"expected {width} {what} columns, found {frame.width}")
    if frame.height and frame["time"].max() >= MICROSECONDS_FROM:  # type: ignore[operator]
        frame = frame.with_columns(pl.col("time") // 1000)
    return frame.with_columns(pl.col("is_buyer_maker").str.to_lowercase().eq("true"))


def trade_frame(csv: bytes) -> pl.DataFrame:
    """A `trades` CSV (or a part of one cut at line ends): id, price, qty, quote_qty, time (ms), is_buyer_maker."""
    return _frame(csv, TRADE_COLUMNS, "trades")


def agg_trade_frame(csv: bytes) -> pl.DataFrame:
    """An `aggTrades` CSV (or a part): agg_id, price, qty, first/last trade id, time (ms), is_buyer_maker."""
    return _frame(csv, AGG_TRADE_COLUMNS, "aggTrades")


def _sides(buyer_maker: bool) -> tuple[str, str]:
    """(taker side, maker side): the buyer resting means a seller took."""
    return ("sell", "buy") if buyer_maker else ("buy", "sell")


def trade_records(csv: bytes, symbol: str) -> list[dict[str, Any]]:
    """The trades as the REST path's payload has them (ccxt's unified trade, plus `maker_side`)."""
    records = []
    for trade_id, price, qty, time, buyer_maker in (
        trade_frame(csv).select("id", "price", "qty", "time", "is_buyer_maker").iter_rows()
    ):
        side, maker_side = _sides(buyer_maker)
        records.append(
            {"id": str(trade_id), "timestamp": time, "symbol": symbol, "side": side,
             "maker_side": maker_side, "price": price, "amount": qty}
        )  # fmt: skip
    return records


def agg_trade_records(csv: bytes, symbol: str) -> list[dict[str, Any]]:
    """The aggregate trades as `agg_trades` rows' payload: id, times in ms, the first and last
    trade ids they aggregate, taker and maker sides as for trades."""
    records = []
    for agg_id, price, qty, first_id, last_id, time, buyer_maker in (
        agg_trade_frame(csv)
        .select("agg_id", "price", "qty", "first_trade_id", "last_trade_id", "time", "is_buyer_maker")
        .iter_rows()
    ):
        side, maker_side = _sides(buyer_maker)
        records.append(
            {"agg_id": str(agg_id), "timestamp": time, "symbol": symbol, "price": price, "amount": qty,
             "first_trade_id": str(first_id), "last_trade_id": str(last_id), "side": side, "maker_side": maker_side}
        )  # fmt: skip
    return records
