"""Monthly range partitions: created on demand before a load, dropped by retention.

Both go through SECURITY DEFINER functions from revision 0002, so the loader role needs no DDL
rights. Creating a partition locks its parent, so it runs in its own short transaction before
the load's, not inside it; it is a catalog lookup and nothing else when the months exist.
"""

from __future__ import annotations

import logging
from datetime import datetime

import asyncpg

log = logging.getLogger(__name__)


async def ensure_months(conn: asyncpg.Connection, table: str, first: datetime, last: datetime) -> int:
    created: int = await conn.fetchval(
        "SELECT cryptoflow_ensure_month_partitions($1::text::regclass, $2, $3)", table, first, last
    )
    if created:
        log.info("partitions created", extra={"table": table, "partitions_created": created})
    return created


async def drop_before(conn: asyncpg.Connection, table: str, cutoff: datetime) -> list[str]:
    """Drop the table's monthly partitions that end at or before `cutoff`; their names."""
    dropped = [
        r[0]
        for r in await conn.fetch("SELECT cryptoflow_drop_partitions_before($1::text::regclass, $2)", table, cutoff)
    ]
    if dropped:
        log.info("partitions dropped by retention", extra={"table": table, "partitions": dropped})
    return dropped
