"""Refreshing the materialized marts (revision 0004) after loads changed rows."""

from __future__ import annotations

import asyncpg

MATERIALIZED = ("market_overview", "performance", "cross_exchange_spread")


async def refresh(conn: asyncpg.Connection) -> None:
    """REFRESH … CONCURRENTLY each materialized mart: readers keep reading the old contents meanwhile."""
    await conn.execute("SELECT cryptoflow_refresh_marts()")
