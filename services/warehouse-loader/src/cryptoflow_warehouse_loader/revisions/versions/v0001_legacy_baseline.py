"""Baseline: the walking skeleton's schema (ohlcv, batches), as its SQL runner created it.

IF NOT EXISTS lets a database migrated by that runner (schema_migrations version 1) adopt
Alembic: this revision then changes nothing, and 0002 upgrades its tables in place.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from cryptoflow_warehouse_loader.revisions.ddl import run_sql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql("""
    CREATE TABLE IF NOT EXISTS ohlcv (
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
    CREATE INDEX IF NOT EXISTS ohlcv_ts_idx ON ohlcv (ts);
    CREATE TABLE IF NOT EXISTS batches (
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
    """)


def downgrade() -> None:
    run_sql("""
    DROP TABLE batches;
    DROP TABLE ohlcv;
    """)
