"""Batch upsert: COPY into a temp table, one INSERT … ON CONFLICT, ledger row, one transaction."""

from __future__ import annotations

import io
from dataclasses import dataclass

import asyncpg
import polars as pl
from cryptoflow_contracts import BatchReady

OHLCV_COLUMNS = ["exchange", "symbol", "timeframe", "ts", "open", "high", "low", "close", "volume", "batch_id"]
_VALUES = ["open", "high", "low", "close", "volume"]

_UPSERT_OHLCV = f"""
WITH upserted AS (
    INSERT INTO ohlcv ({", ".join(OHLCV_COLUMNS)})
    SELECT {", ".join(OHLCV_COLUMNS)} FROM ohlcv_incoming
    ON CONFLICT (exchange, symbol, timeframe, ts) DO UPDATE SET
        {", ".join(f"{c} = EXCLUDED.{c}" for c in [*_VALUES, "batch_id"])}, loaded_at = now()
    WHERE ({", ".join(f"ohlcv.{c}" for c in _VALUES)}) IS DISTINCT FROM ({", ".join(f"EXCLUDED.{c}" for c in _VALUES)})
    RETURNING (xmax = 0) AS inserted
)
SELECT count(*) FILTER (WHERE inserted) AS inserted, count(*) FILTER (WHERE NOT inserted) AS updated FROM upserted
"""


@dataclass(frozen=True)
class LoadResult:
    inserted: int
    updated: int
    unchanged: int
    already_loaded: bool


def csv_for_copy(frame: pl.DataFrame, batch_id: str) -> bytes:
    """The batch as CSV in OHLCV_COLUMNS order; Polars writes it without a Python loop per row."""
    # One row per key: a second row for the same key would make ON CONFLICT fail the batch.
    unique = frame.unique(subset=["exchange", "symbol", "timeframe", "ts"], keep="last", maintain_order=True)
    out = unique.with_columns(pl.lit(batch_id).alias("batch_id")).select(OHLCV_COLUMNS)
    buffer = io.BytesIO()
    # float_precision=None keeps shortest round-trip repr: the warehouse gets the exact float64.
    out.write_csv(buffer, include_header=False, datetime_format="%Y-%m-%dT%H:%M:%S%.3f%z")
    return buffer.getvalue()


async def load_ohlcv(conn: asyncpg.Connection, frame: pl.DataFrame, batch: BatchReady) -> LoadResult:
    async with conn.transaction():
        # The ledger row is locked for the rest of the transaction: a concurrent replica
        # loading the same batch waits here, then sees it loaded.
        claimed = await conn.fetchval(
            """
            INSERT INTO batches (batch_id, dataset, target_table, silver_key, source_key, source_event_id,
                                 rows, rows_inserted, rows_updated, rows_unchanged, quality_score)
            VALUES ($1, $2, 'ohlcv', $3, $4, $5, $6, 0, 0, 0, $7)
            ON CONFLICT (batch_id) DO NOTHING
            RETURNING batch_id
            """,
            batch.event_id,
            batch.dataset.value,
            batch.key,
            batch.source_key,
            batch.source_event_id,
            frame.height,
            batch.quality_score,
        )
        if claimed is None:
            return LoadResult(0, 0, 0, already_loaded=True)
        await conn.execute(
            """
            CREATE TEMP TABLE ohlcv_incoming (LIKE ohlcv INCLUDING DEFAULTS) ON COMMIT DROP
            """
        )
        await conn.copy_to_table(
            "ohlcv_incoming",
            source=io.BytesIO(csv_for_copy(frame, batch.event_id)),
            columns=OHLCV_COLUMNS,
            format="csv",
        )
        row = await conn.fetchrow(_UPSERT_OHLCV)
        assert row is not None
        inserted, updated = int(row["inserted"]), int(row["updated"])
        unchanged = frame.height - inserted - updated
        await conn.execute(
            "UPDATE batches SET rows_inserted = $2, rows_updated = $3, rows_unchanged = $4 WHERE batch_id = $1",
            batch.event_id,
            inserted,
            updated,
            unchanged,
        )
    return LoadResult(inserted, updated, unchanged, already_loaded=False)
