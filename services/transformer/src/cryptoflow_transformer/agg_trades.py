"""Aggregate-trades bronze (Binance's `aggTrades` archive parts) → typed, checked `agg_trades` rows. No I/O here.

A page's aggregates are parsed from its part of the archive's CSV (native.py, with
`cryptoflow_native.trade_archives.agg_trade_records`); they are checked as trades are.
"""

from __future__ import annotations

import polars as pl
from cryptoflow_contracts.silver import AGG_TRADES

from . import bounds
from .bronze import read_snapshots, to_float, to_int, utc_ms
from .quality import Check, CheckedRows, first_failure, non_finite, split_rows, unparsable
from .schemas import polars_schema

SILVER_SCHEMA = pl.Schema(polars_schema(AGG_TRADES))
SIDES = ["buy", "sell"]
TEXT_FIELDS = ["agg_id", "timestamp", "symbol", "price", "amount", "first_trade_id", "last_trade_id", "side"]
PAYLOAD = pl.List(pl.Struct({name: pl.String() for name in [*TEXT_FIELDS, "maker_side"]}))


def frame_from_bronze(ndjson: bytes) -> pl.DataFrame:
    """One row per aggregate (a malformed page is one row flagged `malformed`); raw text and parsed values."""
    snapshots = read_snapshots(ndjson, PAYLOAD).with_columns(
        (pl.col("malformed") | pl.col("payload").is_null()).alias("malformed"),
        pl.col("payload").list.len().alias("page_size"),
    )
    aggregates = snapshots.explode("payload").filter(pl.col("malformed") | (pl.col("page_size") > 0))
    field = pl.col("payload").struct.field
    raw = aggregates.select(
        pl.col("exchange"),
        pl.col("symbol"),
        (pl.col("malformed") | pl.col("payload").is_null()).alias("malformed"),
        field("agg_id"),
        field("symbol").alias("payload_symbol"),
        field("first_trade_id"),
        field("last_trade_id"),
        field("side"),
        field("maker_side"),
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
        (pl.col("malformed"), "malformed_agg_trade"),
        (pl.col("payload_symbol").is_not_null() & (pl.col("payload_symbol") != pl.col("symbol")), "symbol_mismatch"),
        (pl.col("agg_id").is_null() | (pl.col("agg_id") == ""), "null_agg_id"),
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


def validate_agg_trades(raw: pl.DataFrame) -> CheckedRows:
    columns = [
        pl.col("exchange"),
        pl.col("symbol"),
        pl.col("agg_id"),
        utc_ms("ts_ms").alias("ts"),
        pl.col("price"),
        pl.col("amount"),
        pl.col("first_trade_id"),
        pl.col("last_trade_id"),
        pl.col("side"),
        pl.col("maker_side"),
        pl.col("source_event_id"),
    ]
    checked = raw.with_columns(first_failure(checks()).alias("reason"))
    return split_rows(checked, columns, AGG_TRADES.key, SILVER_SCHEMA)


def check_agg_trades(ndjson: bytes) -> CheckedRows:
    return validate_agg_trades(frame_from_bronze(ndjson))
