"""OHLCV bronze → typed, validated Polars frame. Pure functions: no I/O here."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import polars as pl
from cryptoflow_contracts import TIMEFRAME_MS
from cryptoflow_contracts.silver import OHLCV

from . import silver_files
from .bronze import in_fetch_order, read_snapshots
from .quality import CheckedRows
from .schemas import polars_schema

KEY = list(OHLCV.key)
PRICES = ["open", "high", "low", "close"]
SILVER_SCHEMA = polars_schema(OHLCV)

# Bronze lines are whole RawSnapshots; only these fields matter here. Candles are read as
# strings so one malformed value nulls that row instead of failing the whole object.
_BRONZE_SCHEMA = {
    "event_id": pl.String(),
    "exchange": pl.String(),
    "symbol": pl.String(),
    "timeframe": pl.String(),
    "payload": pl.List(pl.List(pl.String())),
}


@dataclass(frozen=True)
class ValidatedOhlcv:
    good: pl.DataFrame
    rejected: pl.DataFrame  # SILVER_SCHEMA columns (nullable) + `reason`
    duplicates: int

    @property
    def input_rows(self) -> int:
        return self.good.height + self.rejected.height

    @property
    def quality_score(self) -> float:
        return self.good.height / self.input_rows if self.input_rows else 1.0


def frame_from_bronze(ndjson: bytes) -> pl.DataFrame:
    """One row per candle, typed; unparsable values become null (and are rejected later).

    A snapshot whose payload is not a list of lists becomes one row with no fields (rejected as
    malformed) instead of failing the whole object.
    """
    snapshots = read_snapshots(ndjson, _BRONZE_SCHEMA["payload"])
    candles = snapshots.filter(~pl.col("malformed")).explode("payload").filter(pl.col("payload").is_not_null())
    cell = pl.col("payload").list
    columns = [
        pl.col("exchange"),
        pl.col("symbol"),
        pl.col("timeframe"),
        cell.get(0, null_on_oob=True).cast(pl.Int64, strict=False).alias("ts_ms"),
        *[
            cell.get(i, null_on_oob=True).cast(pl.Float64, strict=False).alias(name)
            for i, name in enumerate(["open", "high", "low", "close", "volume"], start=1)
        ],
        cell.len().alias("fields"),
        pl.col("event_id").alias("source_event_id"),
        pl.col("fetched"),
    ]
    rows = candles.select(columns)
    broken = snapshots.filter(pl.col("malformed"))
    if broken.height:
        rows = pl.concat([rows, broken.select(columns).with_columns(pl.lit(0, dtype=pl.UInt32).alias("fields"))])
    return rows


def reject_reason() -> pl.Expr:
    """The first check a row fails, or null when it passes all of them."""
    tf_ms = pl.col("timeframe").replace_strict(TIMEFRAME_MS, default=None, return_dtype=pl.Int64)
    checks: list[tuple[pl.Expr, str]] = [
        (pl.col("fields") != 6, "malformed_row: expected [ts, open, high, low, close, volume]"),
        (pl.any_horizontal(pl.col(c).is_null() for c in ["ts_ms", *PRICES, "volume"]), "null_field"),
        # "NaN"/"inf" parse as floats, and every comparison with NaN is false: refuse them by name.
        (pl.any_horizontal(~pl.col(c).is_finite() for c in [*PRICES, "volume"]), "non_finite_value"),
        (tf_ms.is_null(), "unknown_timeframe"),
        (pl.any_horizontal(pl.col(c) <= 0 for c in PRICES), "non_positive_price"),
        (pl.col("high") < pl.max_horizontal("open", "close"), "high_below_open_close"),
        (pl.col("low") > pl.min_horizontal("open", "close"), "low_above_open_close"),
        (pl.col("volume") < 0, "negative_volume"),
        ((pl.col("ts_ms") % tf_ms) != 0, "ts_not_aligned_to_timeframe"),
    ]
    expr: Any = pl.when(checks[0][0]).then(pl.lit(checks[0][1]))
    for condition, reason in checks[1:]:
        expr = expr.when(condition).then(pl.lit(reason))
    result: pl.Expr = expr.otherwise(pl.lit(None, dtype=pl.String))
    return result


def validate_ohlcv(raw: pl.DataFrame) -> ValidatedOhlcv:
    checked = raw.with_columns(reject_reason().alias("reason"))
    to_schema = [
        pl.col("exchange"),
        pl.col("symbol"),
        pl.col("timeframe"),
        pl.from_epoch(pl.col("ts_ms"), time_unit="ms").dt.replace_time_zone("UTC").alias("ts"),
        *[pl.col(c) for c in [*PRICES, "volume"]],
        pl.lit(False).alias("resampled"),
        pl.lit(True).alias("final"),
        pl.col("source_event_id"),
    ]
    good = in_fetch_order(checked.filter(pl.col("reason").is_null())).select(to_schema)
    # A later snapshot of the same candle wins: it was fetched last.
    deduped = good.unique(subset=KEY, keep="last", maintain_order=True).sort(KEY).cast(pl.Schema(SILVER_SCHEMA))
    rejected = checked.filter(pl.col("reason").is_not_null()).select([*to_schema, pl.col("reason")])
    return ValidatedOhlcv(good=deduped, rejected=rejected, duplicates=good.height - deduped.height)


def to_parquet(frame: pl.DataFrame) -> bytes:
    return silver_files.to_parquet(frame, OHLCV.name)


def read_parquet(data: bytes) -> pl.DataFrame:
    return pl.read_parquet(io.BytesIO(data))


def check_ohlcv(ndjson: bytes) -> CheckedRows:
    checked = validate_ohlcv(frame_from_bronze(ndjson))
    return CheckedRows(good=checked.good, rejected=checked.rejected, duplicates=checked.duplicates)
