"""known_gaps gets `kind` (no_records | archive_missing), and the `source_coverage` mart (issue 13).

A bulk archive's missing day is not a gap in the data (REST reads it) but a fact about the source:
it is kept in known_gaps with kind archive_missing (existing rows are no_records; the key gains
kind, so both can name the same interval). data_freshness keeps counting only no_records gaps.

* source_coverage (view, always live): per source (exchange) × asset (symbol) × dataset series,
  its first and last time, rows received, known gaps and records missing, the archive's missing
  days (count and dates) and freshness (how far behind now the series' data ends).

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

from cryptoflow_warehouse_loader.revisions.ddl import run_sql

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_COVERED_UNTIL = "s.last_ts + coalesce(cryptoflow_timeframe_interval(nullif(s.timeframe, '')), interval '0')"
_SAME_SERIES = "k.exchange = s.exchange AND k.symbol = s.symbol AND k.dataset = s.dataset AND k.timeframe = s.timeframe"


def _data_freshness(gaps_filter: str) -> str:
    return f"""
    CREATE OR REPLACE VIEW data_freshness AS
    SELECT s.table_name, s.dataset, s.exchange, s.symbol, s.timeframe, s.first_ts, s.last_ts,
           -- A candle stamped t covers [t, t + timeframe): data is complete up to its end.
           {_COVERED_UNTIL} AS covered_until,
           now() - ({_COVERED_UNTIL}) AS lag,
           s.last_loaded_at, s.rows_received, s.batches,
           s.quality_sum / nullif(s.batches, 0) AS avg_quality, s.min_quality, s.last_quality,
           coalesce(g.gaps, 0) AS known_gaps, coalesce(g.missing, 0) AS known_missing
    FROM series s
    LEFT JOIN LATERAL (
        SELECT count(*) AS gaps, sum(k.missing) AS missing
        FROM known_gaps k
        WHERE {_SAME_SERIES}{gaps_filter}
    ) g ON true;
    """


def upgrade() -> None:
    run_sql(
        """
        ALTER TABLE known_gaps ADD COLUMN kind text NOT NULL DEFAULT 'no_records';
        ALTER TABLE known_gaps DROP CONSTRAINT known_gaps_pkey;
        ALTER TABLE known_gaps ADD CONSTRAINT known_gaps_pkey
            PRIMARY KEY (exchange, symbol, dataset, timeframe, gap_start, gap_end, kind);
        """
        + _data_freshness(" AND k.kind = 'no_records'")
        + f"""
        CREATE VIEW source_coverage AS
        SELECT s.exchange AS source, s.symbol AS asset, s.dataset, s.table_name, s.timeframe,
               s.first_ts, s.last_ts, {_COVERED_UNTIL} AS covered_until, s.rows_received,
               coalesce(g.gaps, 0) AS known_gaps, coalesce(g.missing, 0) AS known_missing,
               coalesce(a.days, 0) AS archive_missing_days, coalesce(a.dates, '{{}}') AS archive_missing_dates,
               s.last_loaded_at, now() - ({_COVERED_UNTIL}) AS freshness
        FROM series s
        LEFT JOIN LATERAL (
            SELECT count(*) AS gaps, sum(k.missing) AS missing
            FROM known_gaps k
            WHERE {_SAME_SERIES} AND k.kind = 'no_records'
        ) g ON true
        LEFT JOIN LATERAL (
            SELECT count(DISTINCT (k.gap_start AT TIME ZONE 'UTC')::date) AS days,
                   array_agg(DISTINCT (k.gap_start AT TIME ZONE 'UTC')::date) AS dates
            FROM known_gaps k
            WHERE {_SAME_SERIES} AND k.kind = 'archive_missing'
        ) a ON true;
        """
    )


def downgrade() -> None:
    run_sql(
        "DROP VIEW source_coverage;"
        "DELETE FROM known_gaps WHERE kind <> 'no_records';"
        + _data_freshness("")
        + """
        ALTER TABLE known_gaps DROP CONSTRAINT known_gaps_pkey;
        ALTER TABLE known_gaps DROP COLUMN kind;
        ALTER TABLE known_gaps ADD CONSTRAINT known_gaps_pkey
            PRIMARY KEY (exchange, symbol, dataset, timeframe, gap_start, gap_end);
        """
    )
