"""Ticker bronze (one ccxt unified ticker per snapshot) → typed, checked `tickers` rows. No I/O here."""

from __future__ import annotations

import polars as pl
from cryptoflow_contracts.silver import TICKERS

from . import bounds
from .bronze import read_snapshots, to_float, to_int, utc_ms
from .quality import Check, CheckedRows, first_failure, non_finite, split_rows, unparsable
from .schemas import polars_schema

SILVER_SCHEMA = pl.Schema(polars_schema(TICKERS))
# silver column → ccxt unified ticker field
FIELDS = {
    "bid": "bid",
    "ask": "ask",
    "last": "last",
    "high": "high",
    "low": "low",
    "base_volume": "baseVolume",
    "quote_volume": "quoteVolume",
}
PRICES = ["bid", "ask", "last", "high", "low"]
VOLUMES = ["base_volume", "quote_volume"]
PAYLOAD = pl.Struct({"symbol": pl.String(), "timestamp": pl.String(), **{f: pl.String() for f in FIELDS.values()}})


def frame_from_bronze(ndjson: bytes) -> pl.DataFrame:
    """One row per ticker: raw text (`raw_*`) and parsed values; ts falls back to the snapshot's first_ts."""
    snapshots = read_snapshots(ndjson, PAYLOAD)
    field = pl.col("payload").struct.field
    raw = snapshots.select(
        pl.col("exchange"),
        pl.col("symbol"),
        pl.col("first_ts"),
        (pl.col("malformed") | pl.col("payload").is_null()).alias("malformed"),
        field("symbol").alias("payload_symbol"),
        field("timestamp").alias("raw_ts"),
        *[field(source).alias(f"raw_{name}") for name, source in FIELDS.items()],
        pl.col("event_id").alias("source_event_id"),
        pl.col("fetched"),
    )
    return raw.with_columns(
        pl.coalesce(to_int("raw_ts"), pl.when(pl.col("raw_ts").is_null()).then(pl.col("first_ts"))).alias("ts_ms"),
        *[to_float(f"raw_{name}").alias(name) for name in FIELDS],
    )


def checks() -> list[Check]:
    present = pl.col
    return [
        (pl.col("malformed"), "malformed_ticker"),
        (pl.col("payload_symbol").is_not_null() & (pl.col("payload_symbol") != pl.col("symbol")), "symbol_mismatch"),
        (
            pl.any_horizontal(unparsable(f"raw_{c}", c) for c in FIELDS) | unparsable("raw_ts", "ts_ms"),
            "unparsable_number",
        ),
        (pl.col("ts_ms").is_null(), "null_ts"),
        (non_finite(list(FIELDS)), "non_finite_value"),
        bounds.ts_check(),
        bounds.value_check(list(FIELDS)),
        (pl.any_horizontal((present(c) <= 0).fill_null(False) for c in PRICES), "non_positive_price"),
        (pl.any_horizontal((present(c) < 0).fill_null(False) for c in VOLUMES), "negative_volume"),
        ((pl.col("bid") > pl.col("ask")).fill_null(False), "bid_above_ask"),
        ((pl.col("high") < pl.col("low")).fill_null(False), "high_below_low"),
        (((pl.col("last") < pl.col("low")) | (pl.col("last") > pl.col("high"))).fill_null(False), "last_outside_range"),
    ]


def validate_tickers(raw: pl.DataFrame) -> CheckedRows:
    columns = [
        pl.col("exchange"),
        pl.col("symbol"),
        utc_ms("ts_ms").alias("ts"),
        *[pl.col(name) for name in FIELDS],
        pl.col("source_event_id"),
    ]
    return split_rows(raw.with_columns(first_failure(checks()).alias("reason")), columns, TICKERS.key, SILVER_SCHEMA)


def check_tickers(ndjson: bytes) -> CheckedRows:
    return validate_tickers(frame_from_bronze(ndjson))
