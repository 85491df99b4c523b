"""Trades bronze (a page of ccxt unified trades per snapshot) → typed, checked `trades` rows. No I/O here."""

from __future__ import annotations

import polars as pl
from cryptoflow_contracts.silver import TRADES

from . import bounds
from .bronze import read_snapshots, to_float, to_int, utc_ms
from .quality import Check, CheckedRows, first_failure, non_finite, split_rows, unparsable
from .schemas import polars_schema

SILVER_SCHEMA = pl.Schema(polars_schema(TRADES))
SIDES = ["buy", "sell"]
PAYLOAD = pl.List(
    pl.Struct(
        {
            "id": pl.String(),
            "timestamp": pl.String(),
            "symbol": pl.String(),
            "side": pl.String(),
            "maker_side": pl.String(),  # from the exchange's own body (native bronze), where it says
            "price": pl.String(),
            "amount": pl.String(),
        }
    )
)


def frame_from_bronze(ndjson: bytes) -> pl.DataFrame:
    """One row per trade (a malformed page is one row flagged `malformed`); raw text and parsed values."""
    snapshots = read_snapshots(ndjson, PAYLOAD).with_columns(
        (pl.col("malformed") | pl.col("payload").is_null()).alias("malformed"),
        pl.col("payload").list.len().alias("page_size"),
    )
    # An empty page has no rows; a null entry inside a page is a malformed trade.
    trades = snapshots.explode("payload").filter(pl.col("malformed") | (pl.col("page_size") > 0))
    field = pl.col("payload").struct.field
    raw = trades.select(
        pl.col("exchange"),
        pl.col("symbol"),
        (pl.col("malformed") | pl.col("payload").is_null()).alias("malformed"),
        field("id").alias("trade_id"),
        field("symbol").alias("payload_symbol"),
        field("side").alias("side"),
        field("maker_side").alias("maker_side"),
        field("timestamp").alias("raw_ts"),
        field("price").alias("raw_price"),
        field("amount").alias("raw_amount"),
        pl.col("event_id").alias("source_event_id"),
        pl.col("fetched"),
    )
    return raw.with_columns(
        to_int("raw_ts").alias("ts_ms"), to_float("raw_price").alias("price"), to_float("raw_amount").alias("amount")
    )


def checks() -> list[Check]:
    return [
        (pl.col("malformed"), "malformed_trade"),
        (pl.col("payload_symbol").is_not_null() & (pl.col("payload_symbol") != pl.col("symbol")), "symbol_mismatch"),
        (pl.col("trade_id").is_null() | (pl.col("trade_id") == ""), "null_trade_id"),
        (
            unparsable("raw_ts", "ts_ms") | unparsable("raw_price", "price") | unparsable("raw_amount", "amount"),
            "unparsable_number",
        ),
        (pl.any_horizontal(pl.col(c).is_null() for c in ["ts_ms", "price", "amount"]), "null_field"),
        (non_finite(["price", "amount"]), "non_finite_value"),
        bounds.ts_check(),
        bounds.value_check(["price", "amount"]),
        (pl.col("price") <= 0, "non_positive_price"),
        (pl.col("amount") <= 0, "non_positive_amount"),
        (~pl.col("side").is_in(SIDES).fill_null(False), "bad_side"),
        (~pl.col("maker_side").is_in(SIDES).fill_null(True), "bad_maker_side"),
    ]


def validate_trades(raw: pl.DataFrame) -> CheckedRows:
    columns = [
        pl.col("exchange"),
        pl.col("symbol"),
        pl.col("trade_id"),
        utc_ms("ts_ms").alias("ts"),
        pl.col("price"),
        pl.col("amount"),
        pl.col("side"),
        pl.col("maker_side"),
        pl.col("source_event_id"),
    ]
    # Dedupe by trade id: overlapping pages return the boundary trades again.
    return split_rows(raw.with_columns(first_failure(checks()).alias("reason")), columns, TRADES.key, SILVER_SCHEMA)


def check_trades(ndjson: bytes) -> CheckedRows:
    return validate_trades(frame_from_bronze(ndjson))
