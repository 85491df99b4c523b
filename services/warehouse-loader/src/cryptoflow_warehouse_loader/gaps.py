"""KnownGap events (stream GAPS) → `known_gaps`; the same gap again changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
from cryptoflow_contracts import KnownGap

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def from_ms(ms: int) -> datetime:
    """Exact: no float division on the way."""
    return EPOCH + timedelta(milliseconds=ms)


async def record_gap(conn: asyncpg.Connection, gap: KnownGap) -> bool:
    """True when the gap was new."""
    status: str = await conn.execute(
        """
        INSERT INTO known_gaps
            (exchange, symbol, dataset, timeframe, gap_start, gap_end, missing, detected_at, event_id, kind)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
        ON CONFLICT (exchange, symbol, dataset, timeframe, gap_start, gap_end, kind) DO NOTHING
        """,
        gap.exchange,
        gap.symbol,
        gap.dataset.value,
        gap.timeframe or "",
        from_ms(gap.start_ts),
        from_ms(gap.end_ts),
        gap.missing,
        gap.detected_at,
        gap.event_id,
        gap.kind,
    )
    return status == "INSERT 0 1"
