"""Aggregator price-history bronze (one coin's points per snapshot) → typed, checked `aggregator_prices` rows.

A snapshot's points are parsed from the provider's history body (native.py, with
`cryptoflow_native.aggregators.history_points`): its series the provider (`exchange`) and the
coin's id (`symbol`). No I/O here.
"""

from __future__ import annotations

import polars as pl
from cryptoflow_contracts.silver import AGGREGATOR_PRICES

from . import bounds
from .bronze import read_snapshots, to_float, to_int, utc_ms
from .quality import Check, CheckedRows, first_failure, non_finite, split_rows, unparsable
from .schemas import polars_schema

SILVER_SCHEMA = pl.Schema(polars_schema(AGGREGATOR_PRICES))
VALUES = ["price_usd", "market_cap_usd", "volume_24h_usd"]
PAYLOAD = pl.List(pl.Struct({name: pl.String() for name in ["asset_id", "ts", *VALUES]}))


def frame_from_bronze(ndjson: bytes) -> pl.DataFrame:
    return coin_points_frame(ndjson, PAYLOAD, VALUES)


def coin_points_frame(
    ndjson: bytes, payload: pl.DataType, values: list[str], kept: tuple[str, ...] = ()
) -> pl.DataFrame:
    """An aggregator page's points (one coin's: `asset_id` is the silver symbol), a row each, with
    `values` as text (`raw_…`) and parsed, and the `kept` fields as they are (a candle's timeframe)."""
    snapshots = read_snapshots(ndjson, payload).with_columns(
        (pl.col("malformed") | pl.col("payload").is_null()).alias("malformed"),
        pl.col("payload").list.len().alias("page_size"),
    )
    points = snapshots.explode("payload").filter(pl.col("malformed") | (pl.col("page_size") > 0))
    field = pl.col("payload").struct.field
    raw = points.select(
        pl.col("exchange"),
        field("asset_id").alias("symbol"),
        *[field(name).alias(name) for name in kept],
        (pl.col("malformed") | pl.col("payload").is_null()).alias("malformed"),
        field("ts").alias("raw_ts"),
        *[field(name).alias(f"raw_{name}") for name in values],
        pl.col("event_id").alias("source_event_id"),
        pl.col("fetched"),
    )
    return raw.with_columns(to_int("raw_ts").alias("ts_ms"), *[to_float(f"raw_{n}").alias(n) for n in values])


def checks() -> list[Check]:
    return [
        (pl.col("malformed"), "malformed_history"),
        ((pl.col("symbol").is_null() | (pl.col("symbol") == "")), "null_asset_id"),
        (
            pl.any_horizontal(unparsable(f"raw_{c}", c) for c in VALUES) | unparsable("raw_ts", "ts_ms"),
            "unparsable_number",
        ),
        (pl.col("ts_ms").is_null(), "null_ts"),
        (pl.col("price_usd").is_null(), "null_price"),
        (non_finite(VALUES), "non_finite_value"),
        bounds.ts_check(),
        bounds.value_check(VALUES),
        ((pl.col("price_usd") <= 0).fill_null(False), "non_positive_price"),
        (pl.any_horizontal((pl.col(c) < 0).fill_null(False) for c in VALUES[1:]), "negative_value"),
    ]


def validate_aggregator_prices(raw: pl.DataFrame) -> CheckedRows:
    columns = [
        pl.col("exchange"),
        pl.col("symbol"),
        utc_ms("ts_ms").alias("ts"),
        *[pl.col(name) for name in VALUES],
        pl.col("source_event_id"),
    ]
    checked = raw.with_columns(first_failure(checks()).alias("reason"))
    return split_rows(checked, columns, AGGREGATOR_PRICES.key, SILVER_SCHEMA)


def check_aggregator_prices(ndjson: bytes) -> CheckedRows:
    return validate_aggregator_prices(frame_from_bronze(ndjson))
