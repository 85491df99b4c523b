"""Aggregator candle bronze (one coin's candles per snapshot) → typed, checked `aggregator_candles` rows.

A snapshot's candles are parsed from the provider's body (native.py, with
`cryptoflow_native.aggregators.candle_records`): its series the provider (`exchange`), the coin's
id (`symbol`) and the candles' timeframe, `ts` each candle's open time. No I/O here.
"""

from __future__ import annotations

import polars as pl
from cryptoflow_contracts.silver import AGGREGATOR_CANDLES

from . import bounds
from .aggregator_prices import coin_points_frame
from .bronze import utc_ms
from .quality import Check, CheckedRows, first_failure, non_finite, split_rows, unparsable
from .schemas import polars_schema

SILVER_SCHEMA = pl.Schema(polars_schema(AGGREGATOR_CANDLES))
PRICES = ["open", "high", "low", "close"]
VALUES = [*PRICES, "volume", "market_cap"]
PAYLOAD = pl.List(pl.Struct({name: pl.String() for name in ["asset_id", "timeframe", "ts", *VALUES]}))


def frame_from_bronze(ndjson: bytes) -> pl.DataFrame:
    return coin_points_frame(ndjson, PAYLOAD, VALUES, kept=("timeframe",))


def checks() -> list[Check]:
    return [
        (pl.col("malformed"), "malformed_candles"),
        ((pl.col("symbol").is_null() | (pl.col("symbol") == "")), "null_asset_id"),
        (pl.col("timeframe").is_null(), "null_timeframe"),
        (
            pl.any_horizontal(unparsable(f"raw_{c}", c) for c in VALUES) | unparsable("raw_ts", "ts_ms"),
            "unparsable_number",
        ),
        (pl.col("ts_ms").is_null(), "null_ts"),
        (pl.any_horizontal(pl.col(c).is_null() for c in PRICES), "null_price"),
        (non_finite(VALUES), "non_finite_value"),
        bounds.ts_check(),
        bounds.value_check(VALUES),
        (pl.any_horizontal(pl.col(c) <= 0 for c in PRICES), "non_positive_price"),
        (pl.col("high") < pl.max_horizontal("open", "close"), "high_below_open_close"),
        (pl.col("low") > pl.min_horizontal("open", "close"), "low_above_open_close"),
        (pl.any_horizontal((pl.col(c) < 0).fill_null(False) for c in ["volume", "market_cap"]), "negative_value"),
    ]


def validate_aggregator_candles(raw: pl.DataFrame) -> CheckedRows:
    columns = [
        pl.col("exchange"),
        pl.col("symbol"),
        pl.col("timeframe"),
        utc_ms("ts_ms").alias("ts"),
        *[pl.col(name) for name in VALUES],
        pl.col("source_event_id"),
    ]
    checked = raw.with_columns(first_failure(checks()).alias("reason"))
    return split_rows(checked, columns, AGGREGATOR_CANDLES.key, SILVER_SCHEMA)


def check_aggregator_candles(ndjson: bytes) -> CheckedRows:
    return validate_aggregator_candles(frame_from_bronze(ndjson))
