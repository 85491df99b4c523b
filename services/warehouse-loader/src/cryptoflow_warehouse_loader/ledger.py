"""The batch ledger (`batches`): one row per silver batch loaded, claimed in the load's transaction.

The claim is the first write of the transaction, so a concurrent replica loading the same batch
blocks on the uncommitted row and then sees it taken: redelivery is a no-op. The row also
carries the batch's lineage (silver object, bronze object, ObjectWritten event) and its cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg
from cryptoflow_contracts import BatchReady


@dataclass(frozen=True)
class BatchSpan:
    rows: int
    min_ts: datetime | None
    max_ts: datetime | None


async def claim(
    conn: asyncpg.Connection, table: str, batch: BatchReady, span: BatchSpan, run_id: str | None
) -> int | None:
    """Insert the ledger row; its batch_no (what loaded rows store), or None when the batch was
    loaded before (nothing else to do)."""
    batch_no: int | None = await conn.fetchval(
        """
        INSERT INTO batches (batch_id, dataset, target_table, silver_key, source_key, source_event_id,
                             rows, rows_inserted, rows_updated, rows_unchanged, quality_score,
                             exchange, lake_url, silver_sha256, min_ts, max_ts, quarantined_rows, run_id)
        VALUES ($1, $2, $3, $4, $5, $6, $7, 0, 0, 0, $8, $9, $10, $11, $12, $13, $14, $15)
        ON CONFLICT (batch_id) DO NOTHING
        RETURNING batch_no
        """,
        batch.event_id,
        batch.dataset.value,
        table,
        batch.key,
        batch.source_key,
        batch.source_event_id,
        span.rows,
        batch.quality_score,
        batch.exchange,
        batch.lake_url,
        batch.sha256,
        span.min_ts,
        span.max_ts,
        batch.quarantined_rows,
        run_id,
    )
    return batch_no


async def finish(
    conn: asyncpg.Connection,
    batch_id: str,
    *,
    inserted: int,
    updated: int,
    unchanged: int,
    load_path: str,
    duration_ms: float,
) -> None:
    await conn.execute(
        """
        UPDATE batches
        SET rows_inserted = $2, rows_updated = $3, rows_unchanged = $4, load_path = $5, duration_ms = $6
        WHERE batch_id = $1
        """,
        batch_id,
        inserted,
        updated,
        unchanged,
        load_path,
        duration_ms,
    )
