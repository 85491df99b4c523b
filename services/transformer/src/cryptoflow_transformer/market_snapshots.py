"""Aggregator bronze (a provider's market listing per snapshot) → typed, checked `market_snapshots` rows.

A snapshot's records are parsed from the provider's response bodies (native.py, with
`cryptoflow_native.aggregators`): one per coin, its series the provider (`exchange`) and the
provider's coin id (`symbol`), its time the provider's `last_updated`. No I/O here.
"""

from __future__ import annotations

import polars as pl
from cryptoflow_contracts.silver import MARKET_SNAPSHOTS

from . import bounds
from .bronze import read_snapshots, to_float, to_int, utc_ms
from .quality import Check, CheckedRows, first_failure, non_finite, split_rows, unparsable
from .schemas import polars_schema

SILVER_SCHEMA = pl.Schema(polars_schema(MARKET_SNAPSHOTS))
NUMBERS = [
    "price_usd",
    "market_cap_usd",
    "volume_24h_usd",
    "circulating_supply",
    "total_supply",
    "max_supply",
    "pct_change_24h",
]
# Supplies are counts of tokens, which for some coins run past any price's plausible range.
MONEY = ["price_usd", "market_cap_usd", "volume_24h_usd"]
SUPPLIES = ["circulating_supply", "total_supply", "max_supply"]
TEXT = ["asset_id", "asset_symbol", "name"]
PAYLOAD = pl.List(pl.Struct({name: pl.String() for name in [*TEXT, "ts", *NUMBERS, "rank"]}))


def frame_from_bronze(ndjson: bytes) -> pl.DataFrame:
    """One row per coin (a malformed page is one row flagged `malformed`); raw text and parsed values."""
    snapshots = read_snapshots(ndjson, PAYLOAD).with_columns(
        (pl.col("malformed") | pl.col("payload").is_null()).alias("malformed"),
        pl.col("payload").list.len().alias("page_size"),
    )
    coins = snapshots.explode("payload").filter(pl.col("malformed") | (pl.col("page_size") > 0))
    field = pl.col("payload").struct.field
    raw = coins.select(
        pl.col("exchange"),
        field("asset_id").alias("symbol"),
        (pl.col("malformed") | pl.col("payload").is_null()).alias("malformed"),
        field("asset_symbol").alias("asset_symbol"),
        field("name").alias("name"),
        field("ts").alias("raw_ts"),
        field("rank").alias("raw_rank"),
        *[field(name).alias(f"raw_{name}") for name in NUMBERS],
        pl.col("event_id").alias("source_event_id"),
        pl.col("fetched"),
    )
    return raw.with_columns(
        to_int("raw_ts").alias("ts_ms"),
        to_int("raw_rank").alias("rank"),
        *[to_float(f"raw_{name}").alias(name) for name in NUMBERS],
    )


def checks() -> list[Check]:
    return [
        (pl.col("malformed"), "malformed_listing"),
        ((pl.col("symbol").is_null() | (pl.col("symbol") == "")), "null_asset_id"),
        ((pl.col("asset_symbol").is_null() | (pl.col("asset_symbol") == "")), "null_asset_symbol"),
        (
            pl.any_horizontal(unparsable(f"raw_{c}", c) for c in NUMBERS)
            | unparsable("raw_ts", "ts_ms")
            | unparsable("raw_rank", "rank"),
            "unparsable_number",
        ),
        (pl.col("ts_ms").is_null(), "null_ts"),
        (pl.col("price_usd").is_null(), "null_price"),
        (non_finite(NUMBERS), "non_finite_value"),
        bounds.ts_check(),
        bounds.value_check(MONEY),
        ((pl.col("price_usd") <= 0).fill_null(False), "non_positive_price"),
        (pl.any_horizontal((pl.col(c) < 0).fill_null(False) for c in [*MONEY[1:], *SUPPLIES]), "negative_value"),
        ((pl.col("rank") < 1).fill_null(False), "bad_rank"),
    ]


def validate_market_snapshots(raw: pl.DataFrame) -> CheckedRows:
    columns = [
        pl.col("exchange"),
        pl.col("symbol"),
        utc_ms("ts_ms").alias("ts"),
        pl.col("asset_symbol"),
        pl.col("name"),
        *[pl.col(name) for name in MONEY],
        *[pl.col(name) for name in SUPPLIES],
        pl.col("rank"),
        pl.col("pct_change_24h"),
        pl.col("source_event_id"),
    ]
    checked = raw.with_columns(first_failure(checks()).alias("reason"))
    return split_rows(checked, columns, MARKET_SNAPSHOTS.key, SILVER_SCHEMA)


def check_market_snapshots(ndjson: bytes) -> CheckedRows:
    return validate_market_snapshots(frame_from_bronze(ndjson))
