"""The silver tables store series and batch numbers, not names; views under the tables' names join
the names back.

* batches gets `batch_no` (identity, unique).
* ohlcv, tickers, order_books, trades, indicators become <name>_data (partitions, primary key
  and BRIN index renamed along) without exchange, symbol and timeframe (series_id stands for
  them) and with batch_no instead of the 40-odd-character batch_id. Each row is ~40 % narrower,
  and a COPY into it correspondingly faster (decision 0026). Rows whose batch has no ledger row
  (written by hand, or by a loader that crashed between COPY and ledger — not possible since
  0002 but cheap to cover) get a placeholder ledger row, so no row loses its lineage.
* <name> is a view: the stored columns with the series' names and the batch id, in silver's
  column order, so every reader (dashboards, marts' users, analysts, `cryptoflow` itself) keeps
  its queries; a filter on exchange/symbol/timeframe is a lookup in `series` and a primary-key
  range scan. Both joins are LEFT JOINs on unique keys: a query that selects neither names nor
  batch id does not join at all (PostgreSQL removes such joins).
* The marts of 0006 already read only series_id from ohlcv; they follow the rename.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from cryptoflow_warehouse_loader.revisions.ddl import run_sql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# table: (series columns, the table's columns in order as of 0006, before series_id and bookkeeping)
_TABLES = {
    "ohlcv": (
        ("exchange", "symbol", "timeframe"),
        ("exchange", "symbol", "timeframe", "ts", "open", "high", "low", "close", "volume", "resampled", "final",
         "source_event_id"),
    ),
    "tickers": (
        ("exchange", "symbol"),
        ("exchange", "symbol", "ts", "bid", "ask", "last", "high", "low", "base_volume", "quote_volume",
         "source_event_id"),
    ),
    "order_books": (
        ("exchange", "symbol"),
        ("exchange", "symbol", "ts", "side", "level", "price", "amount", "source_event_id"),
    ),
    "trades": (
        ("exchange", "symbol"),
        ("exchange", "symbol", "trade_id", "ts", "price", "amount", "side", "source_event_id"),
    ),
    "indicators": (
        ("exchange", "symbol", "timeframe"),
        ("exchange", "symbol", "timeframe", "ts", "rsi_14", "macd", "macd_signal", "macd_hist", "bb_mid",
         "bb_upper", "bb_lower", "vwap", "source_event_id"),
    ),
}  # fmt: skip
_BOOKKEEPING = ("series_id", "batch_id", "loaded_at", "version")
_LEDGER_UP = """
    ALTER TABLE batches ADD COLUMN batch_no bigint GENERATED ALWAYS AS IDENTITY;
    ALTER TABLE batches ADD CONSTRAINT batches_batch_no_key UNIQUE (batch_no);
"""


def _rename_partitions(parent: str, old_prefix: str, new_prefix: str) -> str:
    return f"""
    DO $$
    DECLARE
        part record;
    BEGIN
        FOR part IN
            SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = '{parent}'::regclass AND c.relname ~ '^{old_prefix}_[0-9]{{6}}$'
        LOOP
            EXECUTE format('ALTER TABLE %I RENAME TO %I', part.relname, '{new_prefix}_' || right(part.relname, 6));
        END LOOP;
    END
    $$;
    """


def _view(table: str, series_columns: tuple[str, ...], columns: tuple[str, ...]) -> str:
    def source(column: str) -> str:
        return "s" if column in series_columns else "b" if column == "batch_id" else "d"

    select = ", ".join(f"{source(c)}.{c}" for c in (*columns, *_BOOKKEEPING))
    return f"""
    CREATE VIEW {table} AS
    SELECT {select}
    FROM {table}_data d
    LEFT JOIN series s ON s.series_id = d.series_id
    LEFT JOIN batches b ON b.batch_no = d.batch_no;
    GRANT SELECT ON {table} TO cryptoflow_loader, cryptoflow_reader;
    """


def _to_data_table(table: str, series_columns: tuple[str, ...], columns: tuple[str, ...]) -> str:
    drops = ", ".join(f"DROP COLUMN {c}" for c in series_columns)
    return f"""
    ALTER TABLE {table} RENAME TO {table}_data;
    ALTER TABLE {table}_data RENAME CONSTRAINT {table}_pkey TO {table}_data_pkey;
    ALTER INDEX {table}_ts_brin RENAME TO {table}_data_ts_brin;
    {_rename_partitions(f"{table}_data", table, f"{table}_data")}
    INSERT INTO batches (batch_id, dataset, target_table, silver_key, source_key, source_event_id,
                         rows, rows_inserted, rows_updated, rows_unchanged)
    SELECT d.batch_id, '{table}', '{table}', 'unknown: no ledger row', 'unknown', 'unknown', count(*), count(*), 0, 0
    FROM {table}_data d
    WHERE NOT EXISTS (SELECT FROM batches b WHERE b.batch_id = d.batch_id)
    GROUP BY d.batch_id;
    ALTER TABLE {table}_data ADD COLUMN batch_no bigint;
    UPDATE {table}_data d SET batch_no = b.batch_no FROM batches b WHERE b.batch_id = d.batch_id;
    ALTER TABLE {table}_data ALTER COLUMN batch_no SET NOT NULL, {drops}, DROP COLUMN batch_id;
    {_view(table, series_columns, columns)}
    """


def _from_data_table(table: str, series_columns: tuple[str, ...], columns: tuple[str, ...]) -> str:
    adds = ", ".join(f"ADD COLUMN {c} text" for c in (*series_columns, "batch_id"))
    sets = ", ".join(f"{c} = s.{c}" for c in series_columns)
    not_null = ", ".join(f"ALTER COLUMN {c} SET NOT NULL" for c in (*series_columns, "batch_id"))
    return f"""
    DROP VIEW {table};
    ALTER TABLE {table}_data {adds};
    UPDATE {table}_data d SET {sets}, batch_id = b.batch_id
    FROM series s, batches b WHERE s.series_id = d.series_id AND b.batch_no = d.batch_no;
    ALTER TABLE {table}_data {not_null}, DROP COLUMN batch_no;
    {_rename_partitions(f"{table}_data", f"{table}_data", table)}
    ALTER INDEX {table}_data_ts_brin RENAME TO {table}_ts_brin;
    ALTER TABLE {table}_data RENAME CONSTRAINT {table}_data_pkey TO {table}_pkey;
    ALTER TABLE {table}_data RENAME TO {table};
    """


def upgrade() -> None:
    run_sql(_LEDGER_UP + "".join(_to_data_table(table, *columns) for table, columns in _TABLES.items()))


def downgrade() -> None:
    # The names come back as the last columns (PostgreSQL cannot insert a column in place).
    run_sql(
        "".join(_from_data_table(table, *columns) for table, columns in _TABLES.items())
        + "ALTER TABLE batches DROP COLUMN batch_no;"
    )
