"""Load one silver batch into its warehouse table: COPY, upsert, ledger and series, one transaction.

The rows go into the table's storage (`<name>_data`), with their series' ids and the batch's
number in place of names and batch id (decision 0026). Two paths, chosen per batch under the
series locks (decision 0021):

* append: no row of the batch can hit a stored key (its series' ranges do not overlap what is
  loaded), so the rows are COPied (binary) straight into the table — the usual case, new candles;
* upsert: COPY into a temp table, then one
  `INSERT … SELECT … ON CONFLICT (key) DO UPDATE … WHERE (values) IS DISTINCT FROM (new values)`.
  Unchanged rows are not rewritten; `version` (1 on insert, +1 per update) tells inserts from
  updates in RETURNING (partitioned tables cannot return xmax).

The SQL is built once per table from tables.py; the rows never pass through Python one by one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import asyncpg
import polars as pl
from cryptoflow_contracts import BatchReady
from cryptoflow_runtime.silver_types import POLARS_TYPES

from . import copy_binary, ledger, partitions, series
from .sql import ident, idents
from .tables import BATCH_NO, FINAL, LOADED_AT, RESAMPLED, TS, VERSION, WarehouseTable, warehouse_table

# Millisecond precision and an explicit offset: what silver holds, parsed exactly by PostgreSQL.
CSV_DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%S%.3f%z"
APPEND, UPSERT, NONE = "append", "upsert", "none"


class BatchShapeError(ValueError):
    """The Parquet does not have the silver table's columns/types; it can never load."""


@dataclass(frozen=True)
class LoadResult:
    inserted: int
    updated: int
    unchanged: int
    already_loaded: bool
    path: str = NONE


def prepare(table: WarehouseTable, frame: pl.DataFrame) -> pl.DataFrame:
    """The silver columns in order and type, one row per key (last wins), sorted by key.

    One row per key because ON CONFLICT cannot touch a row twice in one statement; sorted so
    concurrent loads take row locks in the same order.
    """
    defaults = table.silver.defaults
    missing = [c for c in table.silver_columns if c not in frame.columns and c not in defaults]
    if missing:
        raise BatchShapeError(f"{table.name} batch lacks column(s) {', '.join(missing)}")
    # A file written before a column existed gets silver.py's default for it.
    columns = [pl.col(c) if c in frame.columns else pl.lit(defaults[c]).alias(c) for c in table.silver_columns]
    try:
        typed = frame.select(
            column.cast(POLARS_TYPES[kind]) for column, (_, kind) in zip(columns, table.silver.columns, strict=True)
        )
    except pl.exceptions.PolarsError as exc:
        raise BatchShapeError(f"{table.name} batch has a column of the wrong type: {exc}") from exc
    key = list(table.natural_key)
    # A stable sort keeps a key's rows in frame order, so "last" still means last in the batch;
    # after it, duplicates are neighbours, and the (costlier) unique runs only if there are any.
    ordered = typed.sort(key, maintain_order=True)
    duplicated = pl.all_horizontal(pl.col(c).eq_missing(pl.col(c).shift(1)) for c in key).any()
    if ordered.height > 1 and ordered.select(duplicated).item():
        return ordered.unique(subset=key, keep="last", maintain_order=True)
    return ordered


async def copy_rows(conn: asyncpg.Connection, target: str, table: WarehouseTable, rows: pl.DataFrame) -> None:
    """COPY the rows (with their series ids and batch numbers) into `target` as binary, encoding
    while sending."""
    await conn.copy_to_table(
        target,
        source=copy_binary.stream(rows, table.load_column_types),
        columns=table.load_columns,
        format="binary",
    )


@dataclass(frozen=True)
class UpsertSql:
    create_incoming: str
    incoming: str
    upsert: str


def upsert_sql(table: WarehouseTable) -> UpsertSql:
    return _upsert_sql(table.name)


@cache
def _upsert_sql(table_name: str) -> UpsertSql:
    table = warehouse_table(table_name)
    name = ident(table.storage)
    incoming = f"incoming_{table.name}"
    columns = idents(table.load_columns)
    sets = ", ".join(f"{ident(c)} = EXCLUDED.{ident(c)}" for c in [*table.update_columns, BATCH_NO])
    changed = (
        f"({idents(table.value_columns, f'{name}.')}) IS DISTINCT FROM ({idents(table.value_columns, 'EXCLUDED.')})"
    )
    # A closed candle is never replaced by an in-progress one, whichever was loaded last.
    keep_final = f" AND NOT ({name}.{ident(FINAL)} AND NOT EXCLUDED.{ident(FINAL)})" if table.has_final else ""
    # The exchange's own candle is never replaced by one resampled from a finer timeframe;
    # a native candle arriving later does replace a resampled one.
    if table.has_resampled:
        keep_final += f" AND NOT (EXCLUDED.{ident(RESAMPLED)} AND NOT {name}.{ident(RESAMPLED)})"
    upsert = f"""
        WITH upserted AS (
            INSERT INTO {name} ({columns})
            SELECT {columns} FROM {ident(incoming)}
            ON CONFLICT ({idents(table.conflict_key)}) DO UPDATE SET
                {sets}, {ident(LOADED_AT)} = now(), {ident(VERSION)} = {name}.{ident(VERSION)} + 1
            WHERE {changed}{keep_final}
            RETURNING {ident(VERSION)}, {ident(BATCH_NO)}
        )
        SELECT {ident(BATCH_NO)} AS batch_no,
               count(*) FILTER (WHERE {ident(VERSION)} = 1) AS inserted,
               count(*) FILTER (WHERE {ident(VERSION)} > 1) AS updated
        FROM upserted
        GROUP BY {ident(BATCH_NO)}
    """
    create = f"CREATE TEMP TABLE {ident(incoming)} (LIKE {name} INCLUDING DEFAULTS) ON COMMIT DROP"
    return UpsertSql(create_incoming=create, incoming=incoming, upsert=upsert)


async def load_batch(
    conn: asyncpg.Connection,
    table: WarehouseTable,
    frame: pl.DataFrame,
    batch: BatchReady,
    *,
    run_id: str | None = None,
) -> LoadResult:
    """One batch, in a transaction of its own."""
    return (await load_batches(conn, table, [(batch, frame)], run_id=run_id))[0]


async def load_batches(
    conn: asyncpg.Connection,
    table: WarehouseTable,
    batches: Sequence[tuple[BatchReady, pl.DataFrame]],
    *,
    run_id: str | None = None,
) -> list[LoadResult]:
    """Batches of one table (and dataset), in order, in as few transactions as possible: each
    transaction takes a run of consecutive batches that share no key, with one ledger row per
    batch, one COPY and at most one upsert for all their rows, one commit.

    A batch's fixed cost (transaction, commit, series bookkeeping, statements) is most of its
    load time when batches are small, so the loader loads what it pulled together (decision
    0039). Batches sharing a key go to separate transactions, so the later row still updates
    the earlier one: the result is that of loading them one by one, and each gets its own
    LoadResult.
    """
    if len({batch.dataset for batch, _ in batches}) > 1:
        raise ValueError("the batches of a group have one dataset")
    prepared = [(batch, prepare(table, frame)) for batch, frame in batches]
    results: list[LoadResult] = []
    for run in runs_without_shared_keys(table, prepared):
        results.extend(await _load_together(conn, table, run, run_id))
    return results


def runs_without_shared_keys(
    table: WarehouseTable, prepared: list[tuple[BatchReady, pl.DataFrame]]
) -> list[list[tuple[BatchReady, pl.DataFrame]]]:
    """Consecutive runs of batches in which no key appears twice (batches are unique within)."""
    key = list(table.natural_key)
    runs: list[list[tuple[BatchReady, pl.DataFrame]]] = []
    keys: pl.DataFrame | None = None
    for batch, rows in prepared:
        mine = rows.select(key)
        if runs and keys is not None and (mine.height == 0 or mine.join(keys, on=key, how="semi").height == 0):
            runs[-1].append((batch, rows))
            keys = pl.concat([keys, mine])
        else:
            runs.append([(batch, rows)])
            keys = mine
    return runs


async def _load_together(
    conn: asyncpg.Connection,
    table: WarehouseTable,
    prepared: list[tuple[BatchReady, pl.DataFrame]],
    run_id: str | None,
) -> list[LoadResult]:
    """Batches sharing no key, in one transaction."""
    started = time.perf_counter()
    spans = [span_of(rows) for _, rows in prepared]
    firsts = [span.min_ts for span in spans if span.min_ts is not None]
    lasts = [span.max_ts for span in spans if span.max_ts is not None]
    if firsts and lasts:
        await partitions.ensure_months(conn, table.storage, min(firsts), max(lasts))
    async with conn.transaction():
        claimed: list[tuple[BatchReady, pl.DataFrame, int]] = []
        results: dict[str, LoadResult] = {}
        for (batch, rows), span in zip(prepared, spans, strict=True):
            batch_no = await ledger.claim(conn, table.name, batch, span, run_id)
            if batch_no is None:
                results[batch.event_id] = LoadResult(0, 0, 0, already_loaded=True)
            else:
                claimed.append((batch, rows, batch_no))
        counts: dict[int, tuple[int, int]] = {}
        paths: dict[int, str] = {}
        loading = [(batch, rows, batch_no) for batch, rows, batch_no in claimed if rows.height]
        if loading:
            paths, counts = await _write(conn, table, loading)
        share_ms = (time.perf_counter() - started) * 1000 / max(1, len(claimed))
        for batch, rows, batch_no in claimed:
            inserted, updated = counts.get(batch_no, (0, 0))
            unchanged = rows.height - inserted - updated
            batch_path = paths.get(batch_no, NONE)
            await ledger.finish(
                conn,
                batch.event_id,
                inserted=inserted,
                updated=updated,
                unchanged=unchanged,
                load_path=batch_path,
                duration_ms=share_ms,
            )
            results[batch.event_id] = LoadResult(inserted, updated, unchanged, already_loaded=False, path=batch_path)
    return [results[batch.event_id] for batch, _ in prepared]


def span_of(rows: pl.DataFrame) -> ledger.BatchSpan:
    if rows.height == 0:
        return ledger.BatchSpan(0, None, None)
    return ledger.BatchSpan(rows.height, rows[TS].min(), rows[TS].max())  # type: ignore[arg-type]


async def _write(
    conn: asyncpg.Connection, table: WarehouseTable, loading: list[tuple[BatchReady, pl.DataFrame, int]]
) -> tuple[dict[int, str], dict[int, tuple[int, int]]]:
    """The claimed batches' rows into the table: rows of series whose batch range is outside
    what is stored are COPied straight in (append), the others upserted. The path and
    (inserted, updated) per batch_no."""
    parts = [rows.with_columns(pl.lit(batch_no, pl.Int64).alias(BATCH_NO)) for _, rows, batch_no in loading]
    rows = parts[0] if len(parts) == 1 else pl.concat(parts).sort(list(table.natural_key), maintain_order=True)
    batch_series = series.of_rows(table, rows)
    spans = batch_series.spans
    dataset = loading[0][0].dataset.value
    known = await series.lock(conn, table, spans, dataset)
    rows = series.with_series_ids(rows, batch_series, known)
    overlapping = series.overlapping_known_ranges(spans, known)[batch_series.run]
    if overlapping.any():
        mask = pl.Series(overlapping)
        appended, upserted = rows.filter(~mask), rows.filter(mask)
    else:
        appended, upserted = rows, rows.clear()
    counts: dict[int, tuple[int, int]] = {}
    paths: dict[int, str] = {}
    if appended.height:
        await copy_rows(conn, table.storage, table, appended)
        for batch_no, count in appended.group_by(BATCH_NO).len().iter_rows():
            counts[batch_no] = (count, 0)
            paths[batch_no] = APPEND
    if upserted.height:
        sql = upsert_sql(table)
        await conn.execute(sql.create_incoming)
        await copy_rows(conn, sql.incoming, table, upserted)
        for r in await conn.fetch(sql.upsert):
            inserted, updated = counts.get(r["batch_no"], (0, 0))
            counts[r["batch_no"]] = (inserted + int(r["inserted"]), updated + int(r["updated"]))
        for batch_no in upserted[BATCH_NO].unique().to_list():
            paths[batch_no] = UPSERT
    batch_info = [(batch_no, batch.quality_score, batch.event_id) for batch, _, batch_no in loading]
    stats = series.with_batch_stats(batch_series, rows[BATCH_NO], batch_info)
    await series.record(conn, table, stats, dataset)
    return paths, counts
