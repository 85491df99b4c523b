"""The migrated schema: matches the SQLModel metadata, round-trips down and up, adopts the walking
skeleton's database with its rows, and `cryptoflow warehouse migrate` applies it."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from datetime import UTC, datetime

import asyncpg
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from cryptoflow_contracts import BatchReady
from cryptoflow_native import OHLCV_EXTRAS
from cryptoflow_warehouse_loader.migrations import (
    alembic_config,
    current_revision,
    head_revision,
    migrate,
    sqlalchemy_url,
)
from cryptoflow_warehouse_loader.schema import metadata
from cryptoflow_warehouse_loader.tables import TABLES
from cryptoflow_warehouse_loader.upsert import load_batch
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from .support import DATASET, sample

PARTITION = re.compile(r"_\d{6}$")
REVISIONS = [
    "0001",
    "0002",
    "0003",
    "0004",
    "0005",
    "0006",
    "0007",
    "0008",
    "0009",
    "0010",
    "0011",
    "0012",
    "0013",
    "0014",
    "0015",
]


def schema_differences(url: str) -> list[object]:
    def include_name(name: str | None, type_: str, parent_names: object) -> bool:
        # Monthly partitions are made by the loader; alembic_version is Alembic's own.
        return not (type_ == "table" and (name == "alembic_version" or PARTITION.search(name or "")))

    engine = create_engine(sqlalchemy_url(url), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"include_name": include_name, "compare_type": True, "compare_server_default": True}
            )
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


async def test_migrated_schema_matches_the_metadata(warehouse_url: str) -> None:
    assert await asyncio.to_thread(schema_differences, warehouse_url) == []


def downgrade(url: str, target: str) -> None:
    engine = create_engine(sqlalchemy_url(url), poolclass=NullPool)
    try:
        with engine.begin() as connection:
            command.downgrade(alembic_config(connection), target)
    finally:
        engine.dispose()


async def test_downgrade_to_base_and_upgrade_again(warehouse_url: str) -> None:
    await asyncio.to_thread(downgrade, warehouse_url, "base")
    assert await asyncio.to_thread(current_revision, warehouse_url) is None
    assert await asyncio.to_thread(migrate, warehouse_url) == REVISIONS
    assert await asyncio.to_thread(schema_differences, warehouse_url) == []


def upgrade(url: str, target: str) -> None:
    engine = create_engine(sqlalchemy_url(url), poolclass=NullPool)
    try:
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), target)
    finally:
        engine.dispose()


async def test_series_ids_replace_the_text_keys_and_back_with_the_rows(warehouse_url: str) -> None:
    """0006 on a loaded warehouse: rows keep their values and get their series' id as key head;
    a downgrade restores the natural keys with the same rows."""
    conn = await asyncpg.connect(warehouse_url)
    try:
        for table, dataset in DATASET.items():
            for symbol in ("BTC/USDT", "ETH/USDT"):
                rows = sample(table, 30, symbol=symbol)
                event = BatchReady(
                    dataset=dataset, table=table, exchange="binance", lake_url="file:///x",
                    key=f"silver/{table}/{symbol}.parquet", sha256="0" * 64, rows=rows.height, quarantined_rows=0,
                    min_ts=None, max_ts=None, source_key="bronze/x", source_event_id="ObjectWritten-x",
                    quality_score=1.0,
                )  # fmt: skip
                await load_batch(conn, TABLES[table], rows, event)
        checksum = "SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM (SELECT {columns} FROM {table}) t"
        # The columns 0005 has (0008 added ohlcv's kline extras, 0009 trades' maker_side, 0010
        # order_books' sequence and resynced; a downgrade drops them).
        later = {*OHLCV_EXTRAS, "maker_side", "sequence", "resynced"}
        # Tables a later revision made (0012: market_snapshots) are gone at 0005, and back empty.
        old_tables = [table for table in TABLES if table in ("ohlcv", "tickers", "order_books", "trades", "indicators")]
        old_columns = {table: [c for c in TABLES[table].silver_columns if c not in later] for table in old_tables}

        async def checksums() -> dict[str, str]:
            return {
                table: await conn.fetchval(checksum.format(table=table, columns=", ".join(old_columns[table])))
                for table in old_tables
            }

        before = await checksums()
        await asyncio.to_thread(downgrade, warehouse_url, "0005")
        assert await checksums() == before
        for table in old_tables:
            key = await conn.fetchval(
                "SELECT array_agg(a.attname::text ORDER BY k.n) FROM pg_index i "
                "CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) "
                "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
                "WHERE i.indrelid = $1::regclass AND i.indisprimary",
                table,
            )
            assert key == list(TABLES[table].natural_key)
        await asyncio.to_thread(upgrade, warehouse_url, "head")
        assert await checksums() == before
        for table in old_tables:
            # Each row's series_id is its own series' id: one id per series, ids never shared.
            mismatched = await conn.fetchval(
                f"SELECT count(*) FROM {table} t LEFT JOIN series s ON s.series_id = t.series_id "
                f"WHERE s.table_name IS DISTINCT FROM '{table}' OR (s.exchange, s.symbol) <> (t.exchange, t.symbol)"
            )
            assert mismatched == 0
            assert await conn.fetchval(f"SELECT count(DISTINCT series_id) FROM {table}") == 2
    finally:
        await conn.close()
    assert await asyncio.to_thread(schema_differences, warehouse_url) == []


LEGACY = """
CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());
INSERT INTO schema_migrations (version, name) VALUES (1, 'ohlcv and batch ledger');
CREATE TABLE ohlcv (
    exchange text NOT NULL, symbol text NOT NULL, timeframe text NOT NULL, ts timestamptz NOT NULL,
    open double precision NOT NULL, high double precision NOT NULL, low double precision NOT NULL,
    close double precision NOT NULL, volume double precision NOT NULL, batch_id text NOT NULL,
    loaded_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (exchange, symbol, timeframe, ts),
    CHECK (open > 0 AND high > 0 AND low > 0 AND close > 0 AND volume >= 0), CHECK (high >= low)
);
CREATE INDEX ohlcv_ts_idx ON ohlcv (ts);
CREATE TABLE batches (
    batch_id text PRIMARY KEY, dataset text NOT NULL, target_table text NOT NULL, silver_key text NOT NULL,
    source_key text NOT NULL, source_event_id text NOT NULL, rows integer NOT NULL, rows_inserted integer NOT NULL,
    rows_updated integer NOT NULL, rows_unchanged integer NOT NULL, quality_score double precision,
    loaded_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO ohlcv VALUES
    ('binance', 'BTC/USDT', '1m', '2024-01-31T23:59:00Z', 1, 2, 0.5, 1.5, 10, 'BatchReady-old'),
    ('binance', 'BTC/USDT', '1m', '2024-02-01T00:00:00Z', 1.5, 2, 1, 1.75, 11, 'BatchReady-old');
INSERT INTO batches VALUES ('BatchReady-old', 'ohlcv', 'ohlcv', 'silver/x', 'bronze/x', 'ObjectWritten-x', 2, 2, 0, 0, 1.0);
"""


async def test_a_walking_skeleton_database_is_adopted_with_its_rows(fresh_database_url: str) -> None:
    conn = await asyncpg.connect(fresh_database_url)
    try:
        await conn.execute(LEGACY)
        assert await asyncio.to_thread(migrate, fresh_database_url) == REVISIONS
        rows = await conn.fetch("SELECT ts, close, resampled, final, batch_id, version FROM ohlcv ORDER BY ts")
        assert [tuple(r) for r in rows] == [
            (datetime(2024, 1, 31, 23, 59, tzinfo=UTC), 1.5, False, True, "BatchReady-old", 1),
            (datetime(2024, 2, 1, tzinfo=UTC), 1.75, False, True, "BatchReady-old", 1),
        ]
        # Partitioned now, one partition per month of the old rows.
        assert await conn.fetchval("SELECT relkind::text FROM pg_class WHERE relname = 'ohlcv_data'") == "p"
        assert await conn.fetchval("SELECT count(*) FROM pg_inherits WHERE inhparent = 'ohlcv_data'::regclass") == 2
        assert await conn.fetchval("SELECT to_regclass('schema_migrations')") is None
        assert await conn.fetchval("SELECT rows_inserted FROM batches WHERE batch_id = 'BatchReady-old'") == 2
        # The old rows' series exists with their range (so a batch overlapping them upserts) and id.
        series = await conn.fetchrow("SELECT * FROM series WHERE table_name = 'ohlcv'")
        assert (series["exchange"], series["symbol"], series["timeframe"]) == ("binance", "BTC/USDT", "1m")
        assert (series["first_ts"], series["last_ts"], series["rows_received"]) == (rows[0]["ts"], rows[1]["ts"], 2)
        assert await conn.fetchval("SELECT array_agg(DISTINCT series_id) FROM ohlcv") == [series["series_id"]]
    finally:
        await conn.close()
    assert await asyncio.to_thread(schema_differences, fresh_database_url) == []


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cryptoflow_cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


async def test_cli_warehouse_migrate(fresh_database_url: str) -> None:
    first = run_cli("warehouse", "migrate", "--database-url", fresh_database_url)
    assert first.returncode == 0, first.stderr
    assert f"applied {', '.join(REVISIONS)}; now at {head_revision()}" in first.stdout
    # DATABASE_URL works too; a second run has nothing to do.
    second = run_cli("warehouse", "migrate", env={"DATABASE_URL": fresh_database_url})
    assert second.returncode == 0, second.stderr
    assert f"already at {head_revision()}" in second.stdout


async def test_every_silver_table_reads_as_a_view_of_its_silver_columns(warehouse: asyncpg.Connection) -> None:
    """Readers query `<name>` with silver's columns in silver's order; a silver column added
    without recreating the view fails here."""
    for name, table in TABLES.items():
        columns = await warehouse.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position", name
        )
        assert [c["column_name"] for c in columns] == [
            *table.silver_columns,
            "series_id",
            "batch_id",
            "loaded_at",
            "version",
        ]
        assert await warehouse.fetchval("SELECT relkind::text FROM pg_class WHERE relname = $1", name) == "v"
        stored = await warehouse.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = $1", table.storage
        )
        assert not {"exchange", "symbol", "timeframe", "batch_id"} & {c["column_name"] for c in stored}
        assert {"series_id", "batch_no"} <= {c["column_name"] for c in stored}


async def test_reading_a_view_without_names_or_batch_id_reads_only_the_stored_table(
    warehouse: asyncpg.Connection,
) -> None:
    """The views' joins are on unique keys and LEFT: PostgreSQL drops them when unused, and a name
    filter turns into a series lookup driving the primary key."""
    plan = "\n".join(r[0] for r in await warehouse.fetch("EXPLAIN SELECT ts, close FROM ohlcv WHERE series_id = 1"))
    assert "series" not in plan.replace("series_id", "") and "batches" not in plan, plan
    plan = "\n".join(
        r[0]
        for r in await warehouse.fetch(
            "EXPLAIN SELECT ts, close FROM ohlcv WHERE exchange = 'binance' AND symbol = 'BTC/USDT' AND timeframe = '1m'"
        )
    )
    assert "batches" not in plan, plan
