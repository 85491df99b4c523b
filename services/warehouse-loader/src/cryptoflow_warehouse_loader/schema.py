"""The warehouse schema as SQLModel metadata: what the revisions must add up to.

Alembic's `target_metadata`. The silver tables are generated from silver.py (via tables.py),
the others are declared here; tests/warehouse/test_migrations.py compares this metadata with a
migrated database (alembic's compare_metadata), so a silver.py column without a migration, or a
migration without a model change, fails a test instead of surfacing at load time. Partitions,
views, functions, CHECKs and grants are PostgreSQL-specific and live in the revisions alone.
"""

from __future__ import annotations

from typing import Any

from cryptoflow_contracts.silver import ColumnType
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Identity,
    Index,
    Integer,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeEngine
from sqlmodel import SQLModel

from .tables import BATCH_NO, LOADED_AT, SERIES_ID, TABLES, TS, VERSION, WarehouseTable

metadata = SQLModel.metadata

SA_TYPES: dict[ColumnType, TypeEngine[Any]] = {
    ColumnType.TEXT: Text(),
    ColumnType.INT: BigInteger(),
    ColumnType.FLOAT: Float(),
    ColumnType.BOOL: Boolean(),
    ColumnType.TIMESTAMP: DateTime(timezone=True),
}


def _column(table: WarehouseTable, name: str, kind: ColumnType) -> Column[object]:
    required = name in table.natural_key or name == "source_event_id" or name in table.silver.not_null
    return Column(name, SA_TYPES[kind], nullable=not required)


def _silver_table(table: WarehouseTable) -> Table:
    return Table(
        table.storage,
        metadata,
        *[_column(table, name, kind) for name, kind in table.stored_silver_columns],
        Column(BATCH_NO, BigInteger, nullable=False),
        Column(LOADED_AT, DateTime(timezone=True), nullable=False, server_default=text("now()")),
        Column(VERSION, Integer, nullable=False, server_default=text("1")),
        Column(SERIES_ID, BigInteger, nullable=False),
        PrimaryKeyConstraint(*table.conflict_key, name=f"{table.storage}_pkey"),
        Index(f"{table.storage}_ts_brin", TS, postgresql_using="brin"),
        postgresql_partition_by=f"RANGE ({TS})",
    )


SILVER = {name: _silver_table(table) for name, table in TABLES.items()}

batches = Table(
    "batches",
    metadata,
    Column("batch_id", Text, primary_key=True),
    Column("dataset", Text, nullable=False),
    Column("target_table", Text, nullable=False),
    Column("silver_key", Text, nullable=False),
    Column("source_key", Text, nullable=False),
    Column("source_event_id", Text, nullable=False),
    Column("rows", Integer, nullable=False),
    Column("rows_inserted", Integer, nullable=False),
    Column("rows_updated", Integer, nullable=False),
    Column("rows_unchanged", Integer, nullable=False),
    Column("quality_score", Float),
    Column("loaded_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("exchange", Text),
    Column("lake_url", Text),
    Column("silver_sha256", Text),
    Column("min_ts", DateTime(timezone=True)),
    Column("max_ts", DateTime(timezone=True)),
    Column("quarantined_rows", Integer),
    Column("load_path", Text),
    Column("run_id", Text),
    Column("duration_ms", Float),
    Column(BATCH_NO, BigInteger, Identity(always=True), nullable=False),
    UniqueConstraint(BATCH_NO, name="batches_batch_no_key"),
    Index("batches_loaded_at_idx", "loaded_at"),
    Index("batches_run_idx", "run_id"),
)

series = Table(
    "series",
    metadata,
    Column("table_name", Text, nullable=False),
    Column("exchange", Text, nullable=False),
    Column("symbol", Text, nullable=False),
    Column("timeframe", Text, nullable=False, server_default=text("''")),
    Column("dataset", Text),
    Column("first_ts", DateTime(timezone=True)),
    Column("last_ts", DateTime(timezone=True)),
    Column("rows_received", BigInteger, nullable=False, server_default=text("0")),
    Column("batches", Integer, nullable=False, server_default=text("0")),
    Column("quality_sum", Float, nullable=False, server_default=text("0")),
    Column("min_quality", Float),
    Column("last_quality", Float),
    Column("last_batch_id", Text),
    Column("last_loaded_at", DateTime(timezone=True)),
    Column(SERIES_ID, BigInteger, Identity(always=True), nullable=False),
    PrimaryKeyConstraint("table_name", "exchange", "symbol", "timeframe", name="series_pkey"),
    UniqueConstraint(SERIES_ID, name="series_series_id_key"),
)

known_gaps = Table(
    "known_gaps",
    metadata,
    Column("exchange", Text, nullable=False),
    Column("symbol", Text, nullable=False),
    Column("dataset", Text, nullable=False),
    Column("timeframe", Text, nullable=False, server_default=text("''")),
    Column("gap_start", DateTime(timezone=True), nullable=False),
    Column("gap_end", DateTime(timezone=True), nullable=False),
    Column("missing", Integer),
    Column("detected_at", DateTime(timezone=True), nullable=False),
    Column("event_id", Text, nullable=False),
    Column("loaded_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("kind", Text, nullable=False, server_default=text("'no_records'")),
    PrimaryKeyConstraint(
        "exchange", "symbol", "dataset", "timeframe", "gap_start", "gap_end", "kind", name="known_gaps_pkey"
    ),
    Index("known_gaps_start_idx", "gap_start"),
)

quarantine = Table(
    "quarantine",
    metadata,
    Column("quarantine_key", Text, nullable=False),
    Column("row_no", Integer, nullable=False),
    Column("dataset", Text),
    Column("table_name", Text),
    Column("exchange", Text),
    Column("symbol", Text),
    Column("ts", DateTime(timezone=True)),
    Column("reason", Text, nullable=False),
    Column("row_data", JSONB, nullable=False),
    Column("source_key", Text),
    Column("dead_letter_event_id", Text, nullable=False),
    Column("loaded_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    PrimaryKeyConstraint("quarantine_key", "row_no", name="quarantine_pkey"),
    Index("quarantine_loaded_at_idx", "loaded_at"),
    Index("quarantine_series_idx", "exchange", "symbol", "ts"),
)

service_runs = Table(
    "service_runs",
    metadata,
    Column("run_id", Text, primary_key=True),
    Column("service", Text, nullable=False),
    Column("instance", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("reported_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True)),
    Column("counts", JSONB, nullable=False, server_default=text("'{}'")),
    Column("errors", Integer, nullable=False, server_default=text("0")),
    Column("last_error", Text),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Index("service_runs_service_started_idx", "service", "started_at"),
)

alerts = Table(
    "alerts",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("rule", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("symbol", Text, nullable=False),
    Column("exchanges", Text, nullable=False),
    Column("table_name", Text, nullable=False, server_default=text("''")),
    Column("timeframe", Text, nullable=False, server_default=text("''")),
    Column("observed_at", DateTime(timezone=True), nullable=False),
    Column("value", Float, nullable=False),
    Column("threshold", Float, nullable=False),
    Column("message", Text, nullable=False),
    Column("triggered_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("event_id", Text),
    Column("published_at", DateTime(timezone=True)),
    UniqueConstraint("rule", "symbol", "exchanges", "table_name", "timeframe", "observed_at", name="alerts_once"),
    Index("alerts_triggered_at_idx", "triggered_at"),
    Index("alerts_unpublished_idx", "id", postgresql_where=text("published_at IS NULL")),
)

# Provider coin id → the exchanges' base symbol (revision 0012): the operator's to edit.
asset_registry = Table(
    "asset_registry",
    metadata,
    Column("source", Text, nullable=False),
    Column("asset_id", Text, nullable=False),
    Column("base", Text, nullable=False),
    Column("note", Text),
    PrimaryKeyConstraint("source", "asset_id", name="asset_registry_pkey"),
)

# The read API's keys (revision 0013): only the SHA-256 digest of a key is stored.
api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", BigInteger, Identity(always=True), primary_key=True),
    Column("name", Text, nullable=False),
    Column("key_prefix", Text, nullable=False),
    Column("key_sha256", Text, nullable=False),
    Column("rate_per_s", Float, nullable=False, server_default=text("20")),
    Column("burst", Integer, nullable=False, server_default=text("100")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("revoked_at", DateTime(timezone=True)),
    UniqueConstraint("key_sha256", name="api_keys_key_sha256_key"),
    Index("api_keys_name_idx", "name"),
)
