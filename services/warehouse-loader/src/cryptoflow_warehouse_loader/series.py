"""Series bookkeeping: per table·exchange·symbol·timeframe, its id, the time range loaded and batch quality.

Kept in each batch's transaction, set-based (one statement per step, arrays of the batch's few
series). Locking the batch's series rows first (in key order, so two replicas cannot deadlock)
makes the range check race-free: rows of a series whose batch range lies outside its known range
cannot conflict with a stored row, and take the append path (decision 0021). The same lock hands out
the series' ids, which every row carries as the head of its table's primary key (decision 0026).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg
import numpy as np
import numpy.typing as npt
import polars as pl

from .tables import SERIES_COLUMNS, SERIES_ID, TS, WarehouseTable

# A span names its series with all three; tables without a timeframe have '' there, as in `series`.
SPAN_COLUMNS = list(SERIES_COLUMNS)


@dataclass(frozen=True)
class StoredSeries:
    series_id: int
    first_ts: datetime | None
    last_ts: datetime | None


@dataclass(frozen=True)
class BatchSeries:
    """The series of a batch: `spans` has one row per series (exchange, symbol, timeframe ('' if
    none), first_ts, last_ts, rows) in key order; `run` gives each row its span's index."""

    spans: pl.DataFrame
    run: npt.NDArray[np.int64]


def of_rows(table: WarehouseTable, rows: pl.DataFrame) -> BatchSeries:
    """The batch's series, from rows sorted by their natural key (upsert.prepare does that).

    Sorted rows hold each series in one contiguous run, so the runs are found by comparing each
    row with the one before: no hashing of the name columns, which costs more per batch.
    """
    names = table.series_columns
    starts = pl.any_horizontal(pl.col(c).ne_missing(pl.col(c).shift(1)) for c in names)
    run = rows.select((starts.cum_sum() - 1).cast(pl.Int64).alias("run"))["run"]
    spans = (
        rows.select(*names, pl.col(TS), run)
        .group_by("run", maintain_order=True)
        .agg(
            *(pl.col(c).first() for c in names),
            pl.col(TS).min().alias("first_ts"),
            pl.col(TS).max().alias("last_ts"),
            pl.len().alias("rows"),
        )
        .select(
            *(pl.col(c) if c in names else pl.lit("").alias(c) for c in SPAN_COLUMNS), "first_ts", "last_ts", "rows"
        )
    )
    return BatchSeries(spans, run.to_numpy())


def _key_arrays(batch_spans: pl.DataFrame) -> list[list[str]]:
    return [batch_spans[c].to_list() for c in SPAN_COLUMNS]


async def lock(
    conn: asyncpg.Connection, table: WarehouseTable, batch_spans: pl.DataFrame, dataset: str
) -> dict[tuple[str, str, str], StoredSeries]:
    """Create missing series rows, lock the batch's series rows; their ids, and ranges before this batch."""
    keys = _key_arrays(batch_spans)
    await conn.execute(
        """
        INSERT INTO series (table_name, exchange, symbol, timeframe, dataset)
        SELECT $1, u.exchange, u.symbol, u.timeframe, $5
        FROM unnest($2::text[], $3::text[], $4::text[]) AS u(exchange, symbol, timeframe)
        ORDER BY u.exchange, u.symbol, u.timeframe
        ON CONFLICT (table_name, exchange, symbol, timeframe) DO NOTHING
        """,
        table.name,
        *keys,
        dataset,
    )
    records = await conn.fetch(
        """
        SELECT s.series_id, s.exchange, s.symbol, s.timeframe, s.first_ts, s.last_ts
        FROM series s
        JOIN unnest($2::text[], $3::text[], $4::text[]) AS u(exchange, symbol, timeframe)
          ON (s.exchange, s.symbol, s.timeframe) = (u.exchange, u.symbol, u.timeframe)
        WHERE s.table_name = $1
        ORDER BY s.exchange, s.symbol, s.timeframe
        FOR UPDATE OF s
        """,
        table.name,
        *keys,
    )
    return {
        (r["exchange"], r["symbol"], r["timeframe"]): StoredSeries(r["series_id"], r["first_ts"], r["last_ts"])
        for r in records
    }


def with_series_ids(
    rows: pl.DataFrame, batch_series: BatchSeries, known: dict[tuple[str, str, str], StoredSeries]
) -> pl.DataFrame:
    """The rows with their `series_id` column."""
    keys = batch_series.spans.select(SPAN_COLUMNS).iter_rows()
    ids = np.array([known[key].series_id for key in keys], dtype=np.int64)
    return rows.with_columns(pl.Series(SERIES_ID, ids[batch_series.run]))


def overlapping_known_ranges(
    batch_spans: pl.DataFrame, known: dict[tuple[str, str, str], StoredSeries]
) -> npt.NDArray[np.bool_]:
    """Per span: can a row of it hit a stored key? False when its range lies wholly before or
    after everything loaded for that series so far. (A loop over series, not rows.)"""
    flags = []
    for span in batch_spans.iter_rows(named=True):
        stored = known[(span["exchange"], span["symbol"], span["timeframe"])]
        if stored.first_ts is None or stored.last_ts is None:
            flags.append(False)
        else:
            flags.append(not (span["last_ts"] < stored.first_ts or span["first_ts"] > stored.last_ts))
    return np.array(flags, dtype=np.bool_)


def with_batch_stats(
    batch_series: BatchSeries, batch_nos: pl.Series, batches: list[tuple[int, float, str]]
) -> pl.DataFrame:
    """The spans with, per series, what the batches touching it add to its bookkeeping: how many
    (`batches`), their quality (`quality_sum`, `min_quality`, `last_quality`) and the last one's
    id. `batch_nos` is each row's batch number; `batches` is (batch_no, quality, batch_id) in
    load order."""
    info = pl.DataFrame(
        batches, schema={"batch_no": pl.Int64, "quality": pl.Float64, "batch_id": pl.String}, orient="row"
    )
    per_span = (
        pl.DataFrame({"run": batch_series.run, "batch_no": batch_nos.cast(pl.Int64)})
        .unique(maintain_order=True)
        .join(info, on="batch_no", how="left")
        .sort("run", "batch_no")
        .group_by("run", maintain_order=True)
        .agg(
            pl.len().cast(pl.Int64).alias("batches"),
            pl.col("quality").sum().alias("quality_sum"),
            pl.col("quality").min().alias("min_quality"),
            pl.col("quality").last().alias("last_quality"),
            pl.col("batch_id").last().alias("last_batch_id"),
        )
    )
    return pl.concat([batch_series.spans, per_span.drop("run")], how="horizontal")


async def record(conn: asyncpg.Connection, table: WarehouseTable, spans: pl.DataFrame, dataset: str) -> None:
    """Add the loaded spans (with_batch_stats) to their series' ranges, counts and quality."""
    await conn.execute(
        """
        UPDATE series s SET
            first_ts = least(s.first_ts, u.first_ts),
            last_ts = greatest(s.last_ts, u.last_ts),
            rows_received = s.rows_received + u.rows,
            batches = s.batches + u.batches,
            quality_sum = s.quality_sum + u.quality_sum,
            min_quality = least(s.min_quality, u.min_quality),
            last_quality = u.last_quality,
            last_batch_id = u.last_batch_id,
            last_loaded_at = now(),
            dataset = $13
        FROM unnest($2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[], $7::bigint[],
                    $8::bigint[], $9::float8[], $10::float8[], $11::float8[], $12::text[])
            AS u(exchange, symbol, timeframe, first_ts, last_ts, rows,
                 batches, quality_sum, min_quality, last_quality, last_batch_id)
        WHERE s.table_name = $1
          AND (s.exchange, s.symbol, s.timeframe) = (u.exchange, u.symbol, u.timeframe)
        """,
        table.name,
        *_key_arrays(spans),
        *(
            spans[c].to_list()
            for c in (
                "first_ts",
                "last_ts",
                "rows",
                "batches",
                "quality_sum",
                "min_quality",
                "last_quality",
                "last_batch_id",
            )
        ),
        dataset,
    )
