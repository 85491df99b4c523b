"""Versioned schema migrations, applied at start under an advisory lock (safe with replicas)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import asyncpg

log = logging.getLogger(__name__)

# Any constant: all loader replicas contend on the same lock, so one migrates and the others wait.
ADVISORY_LOCK_ID = 0x63F10_0001


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "ohlcv and batch ledger",
        """
        CREATE TABLE ohlcv (
            exchange   text             NOT NULL,
            symbol     text             NOT NULL,
            timeframe  text             NOT NULL,
            ts         timestamptz      NOT NULL,
            open       double precision NOT NULL,
            high       double precision NOT NULL,
            low        double precision NOT NULL,
            close      double precision NOT NULL,
            volume     double precision NOT NULL,
            batch_id   text             NOT NULL,
            loaded_at  timestamptz      NOT NULL DEFAULT now(),
            PRIMARY KEY (exchange, symbol, timeframe, ts),
            CHECK (open > 0 AND high > 0 AND low > 0 AND close > 0 AND volume >= 0),
            CHECK (high >= low)
        );
        CREATE INDEX ohlcv_ts_idx ON ohlcv (ts);
        CREATE TABLE batches (
            batch_id        text        PRIMARY KEY,
            dataset         text        NOT NULL,
            target_table    text        NOT NULL,
            silver_key      text        NOT NULL,
            source_key      text        NOT NULL,
            source_event_id text        NOT NULL,
            rows            integer     NOT NULL,
            rows_inserted   integer     NOT NULL,
            rows_updated    integer     NOT NULL,
            rows_unchanged  integer     NOT NULL,
            quality_score   double precision,
            loaded_at       timestamptz NOT NULL DEFAULT now()
        );
        """,
    ),
)


async def migrate(conn: asyncpg.Connection) -> list[int]:
    """Apply pending migrations; returns the versions applied by this call."""
    applied: list[int] = []
    await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_ID)
    try:
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        done = {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}
        for migration in MIGRATIONS:
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", migration.version, migration.name
                )
            applied.append(migration.version)
            log.info("migration applied", extra={"version": migration.version, "migration": migration.name})
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_ID)
    return applied
