"""OHLCV bronze (pages of ccxt candles [ts, open, high, low, close, volume]) → typed, checked `ohlcv` rows.

A candle parsed from the exchange's own kline (native bronze) may carry four more fields, the
kline's extras (quote volume, trade count, taker-buy base and quote volume): ten fields.

A candle is `final` as its snapshot says (a stream page of a candle still forming has
`final: false`; a snapshot without the field is final). A forming candle is replaced downstream
by the closed one of the same key: here, within one object, a closed copy wins over a forming one
whatever their fetch order; in the warehouse the upsert never lets a forming row replace a closed
one; derived series take closed candles only (derived.py).

Pure functions: no I/O here.
"""

from __future__ import annotations

import io

import polars as pl
from cryptoflow_contracts import TIMEFRAME_MS
from cryptoflow_contracts.silver import OHLCV
from cryptoflow_native import OHLCV_EXTRAS

from . import bounds, silver_files
from .bronze import read_snapshots, try_read_snapshots
from .quality import Check, CheckedRows, first_failure, split_rows
from .schemas import polars_schema

KEY = list(OHLCV.key)
RAW_KEY = ["exchange", "symbol", "timeframe", "ts_ms"]  # KEY, before ts is made a timestamp
PRICES = ["open", "high", "low", "close"]
VALUES = [*PRICES, "volume"]
EXTRAS = list(OHLCV_EXTRAS)
# A candle: ccxt's six fields, or those and the kline's extras.
FIELDS = (6, 6 + len(EXTRAS))
SILVER_SCHEMA = polars_schema(OHLCV)
# Candles read as text: one malformed value nulls that row instead of failing the whole object.
PAYLOAD = pl.List(pl.List(pl.String()))
# The same candles read as numbers, the fast read of an object that holds nothing else (see below).
NUMBERS = pl.List(pl.List(pl.Float64()))
# Below 2**53 a float holds every integer exactly, and reads as the text would.
EXACT = 2**53


def frame_from_bronze(ndjson: bytes) -> pl.DataFrame:
    """One row per candle, typed; unparsable values become null (and are rejected later).

    A snapshot whose payload is not a list of lists becomes one row with no fields (rejected as
    malformed) instead of failing the whole object. `tf_ms` is the snapshot's timeframe in ms
    (null when unknown).
    """
    rows = _from_numbers(ndjson)
    return rows if rows is not None else _from_text(ndjson)


def _with_tf_ms(snapshots: pl.DataFrame) -> pl.DataFrame:
    """`tf_ms`, the snapshot's timeframe in ms (null when unknown); looked up per snapshot, not per row."""
    tf_ms = [TIMEFRAME_MS.get(tf) if tf is not None else None for tf in snapshots["timeframe"].to_list()]
    return snapshots.with_columns(pl.Series("tf_ms", tf_ms, dtype=pl.Int64))


def _columns(ts_ms: pl.Expr, values: list[pl.Expr]) -> list[pl.Expr]:
    """`values`: the five values, then the four extras."""
    return [
        pl.col("exchange"),
        pl.col("symbol"),
        pl.col("timeframe"),
        ts_ms.alias("ts_ms"),
        *[value.alias(name) for value, name in zip(values, [*VALUES, *EXTRAS], strict=True)],
        pl.col("payload").list.len().alias("fields"),
        pl.col("event_id").alias("source_event_id"),
        pl.col("fetched"),
        pl.col("tf_ms"),
        pl.col("final").fill_null(True),
    ]


def _candles(snapshots: pl.DataFrame) -> pl.DataFrame:
    """One row per candle of the well-formed snapshots (an empty page has none)."""
    if snapshots["malformed"].any():
        snapshots = snapshots.filter(~pl.col("malformed"))
    candles = snapshots.explode("payload")
    return candles.filter(pl.col("payload").is_not_null()) if candles["payload"].null_count() else candles


def _from_text(ndjson: bytes) -> pl.DataFrame:
    """Any object: every value read as text, then parsed (what is not a number becomes null)."""
    snapshots = _with_tf_ms(read_snapshots(ndjson, PAYLOAD))
    cell = pl.col("payload").list
    columns = _columns(
        cell.get(0, null_on_oob=True).cast(pl.Int64, strict=False),
        [cell.get(i, null_on_oob=True).cast(pl.Float64, strict=False) for i in range(1, 10)],
    )
    rows = _candles(snapshots).select(columns)
    broken = snapshots.filter(pl.col("malformed"))
    if broken.height:
        rows = pl.concat([rows, broken.select(columns).with_columns(pl.lit(0, dtype=pl.UInt32).alias("fields"))])
    return rows


def _from_numbers(ndjson: bytes) -> pl.DataFrame | None:
    """The rows _from_text gives, when every candle value is a JSON number (or null) and every ts
    an integer below 2**53; else None.

    The text read writes a JSON number out and parses it back: the float the JSON reader parsed,
    as this read gives it; and a ts that integer, which this read gives exactly below 2**53. A
    string, bool or nested value fails this read, so that object reads as text (as does one with
    a fractional or larger ts).
    """
    snapshots = try_read_snapshots(ndjson, NUMBERS)
    if snapshots is None:
        return None
    cell = pl.col("payload").list
    rows = _candles(_with_tf_ms(snapshots)).select(
        _columns(cell.get(0, null_on_oob=True), [cell.get(i, null_on_oob=True) for i in range(1, 10)])
    )
    ts = rows["ts_ms"]
    largest = ts.abs().max()
    if (largest is not None and largest >= EXACT) or not (ts == ts.floor()).all():  # type: ignore[operator]
        return None
    return rows.with_columns(ts.cast(pl.Int64))


def checks() -> list[Check]:
    return [
        (~pl.col("fields").is_in(FIELDS), "malformed_row: expected [ts, open, high, low, close, volume]"),
        (pl.any_horizontal(pl.col(c).is_null() for c in ["ts_ms", *VALUES]), "null_field"),
        # "NaN"/"inf" parse as floats, and every comparison with NaN is false: refuse them by name.
        (pl.any_horizontal(~pl.col(c).is_finite() for c in VALUES), "non_finite_value"),
        bounds.ts_check(),
        bounds.value_check(VALUES),
        (pl.col("tf_ms").is_null(), "unknown_timeframe"),
        (pl.any_horizontal(pl.col(c) <= 0 for c in PRICES), "non_positive_price"),
        (pl.col("high") < pl.max_horizontal("open", "close"), "high_below_open_close"),
        (pl.col("low") > pl.min_horizontal("open", "close"), "low_above_open_close"),
        (pl.col("volume") < 0, "negative_volume"),
        # The extras, where present: finite, not negative.
        (pl.any_horizontal(~pl.col(c).is_finite() | (pl.col(c) < 0) for c in EXTRAS), "invalid_kline_field"),
        ((pl.col("ts_ms") % pl.col("tf_ms")) != 0, "ts_not_aligned_to_timeframe"),
    ]


def validate_ohlcv(raw: pl.DataFrame) -> CheckedRows:
    columns = [
        pl.col("exchange"),
        pl.col("symbol"),
        pl.col("timeframe"),
        pl.from_epoch(pl.col("ts_ms"), time_unit="ms").dt.replace_time_zone("UTC").alias("ts"),
        *[pl.col(c) for c in VALUES],
        *[pl.col(c) for c in EXTRAS],
        pl.lit(False).alias("resampled"),
        pl.col("final"),
        pl.col("source_event_id"),
    ]
    reason = pl.lit(None, dtype=pl.String) if _all_pass(raw) else first_failure(checks())
    checked = raw.with_columns(reason.alias("reason"))
    if checked["final"].all():
        # A later snapshot of the same candle wins: it was fetched last.
        return split_rows(checked, columns, KEY, pl.Schema(SILVER_SCHEMA))
    # A closed candle wins over a forming copy of it whatever their fetch order (a forming page
    # fetched after the closed one is older news); among copies alike, the later fetch.
    good = pl.col("reason").is_null()
    closed_copy = (good & pl.col("final")).any().over(RAW_KEY)
    kept = checked.filter(~(good & ~pl.col("final") & closed_copy))
    split = split_rows(kept, columns, KEY, pl.Schema(SILVER_SCHEMA))
    return CheckedRows(split.good, split.rejected, split.duplicates + checked.height - kept.height)


def _all_pass(raw: pl.DataFrame) -> bool:
    """True only when no check() fires on any row: the usual object, told apart with Series arithmetic.

    The reason expression costs about as much for 10 rows as for 10,000, most of checking a small
    object: when every row passes, every reason is null without it. No value is null and their sum
    is finite, so each is; then high and low bound open and close, so low > 0 makes every price
    positive.
    """
    fields, ts_ms, open_, high, low, close, volume, tf_ms = (
        raw[name] for name in ["fields", "ts_ms", *VALUES, "tf_ms"]
    )
    if any(column.null_count() for column in (fields, ts_ms, open_, high, low, close, volume, tf_ms)):
        return False
    # The kline extras, where present (null is allowed): not negative, finite.
    if not all(bool(((raw[name] >= 0) & raw[name].is_finite()).fill_null(True).all()) for name in EXTRAS):
        return False
    return bool(
        raw.height > 0
        and fields.is_in(FIELDS).all()
        and (open_ + high + low + close + volume).is_finite().all()
        and ((high >= open_) & (high >= close) & (low <= open_) & (low <= close)).all()
        and low.min() > 0  # type: ignore[operator]
        and volume.min() >= 0  # type: ignore[operator]
        and ((ts_ms % tf_ms) == 0).all()
        and bounds.within(ts_ms, (open_, high, low, close, volume))
    )


def to_parquet(frame: pl.DataFrame) -> bytes:
    return silver_files.to_parquet(frame, OHLCV.name)


def read_parquet(data: bytes) -> pl.DataFrame:
    return pl.read_parquet(io.BytesIO(data))


def check_ohlcv(ndjson: bytes) -> CheckedRows:
    return validate_ohlcv(frame_from_bronze(ndjson))
