"""Series ids in the silver tables' primary keys (decision 0026).

* series gets `series_id` (identity, unique): one integer per table·exchange·symbol·timeframe.
* ohlcv, tickers, order_books, trades, indicators get `series_id` (NOT NULL, filled from series;
  series rows are created for rows that predate them, e.g. the skeleton's ohlcv) and their primary
  key becomes (series_id, ts, the natural key's other columns). exchange, symbol and timeframe stay as
  columns: readers filter on them as before. No foreign key to series: COPY would check it row by
  row; the loader takes ids from series under the series lock, and nothing else writes rows.
* The marts read ohlcv through the new key: ohlcv_series_base carries series_id and
  cryptoflow_close_at(series_id, at) is one backward primary-key probe, as before.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from cryptoflow_warehouse_loader.revisions.ddl import run_sql
from cryptoflow_warehouse_loader.revisions.versions.v0004_marts import CLOSE_AT as CLOSE_AT_0004
from cryptoflow_warehouse_loader.revisions.versions.v0004_marts import MARTS as MARTS_0004

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# table: (series columns, natural key without the series columns)
_TABLES = {
    "ohlcv": (("exchange", "symbol", "timeframe"), ("ts",)),
    "tickers": (("exchange", "symbol"), ("ts",)),
    "order_books": (("exchange", "symbol"), ("ts", "side", "level")),
    "trades": (("exchange", "symbol"), ("ts", "trade_id")),
    "indicators": (("exchange", "symbol", "timeframe"), ("ts",)),
}

_DROP_MARTS = """
    DROP MATERIALIZED VIEW cross_exchange_spread;
    DROP MATERIALIZED VIEW performance;
    DROP MATERIALIZED VIEW market_overview;
    DROP VIEW ohlcv_series_base;
"""

# The marts of 0004, over (series_id, ts) instead of (exchange, symbol, timeframe, ts).
_MARTS = """
    CREATE FUNCTION cryptoflow_close_at(p_series_id bigint, p_at timestamptz)
    RETURNS double precision
    LANGUAGE sql STABLE PARALLEL SAFE
    BEGIN ATOMIC
        SELECT o.close FROM ohlcv o
        WHERE o.series_id = p_series_id AND o.ts <= p_at
        ORDER BY o.ts DESC
        LIMIT 1;
    END;

    CREATE VIEW ohlcv_series_base AS
    SELECT DISTINCT ON (s.exchange, s.symbol) s.exchange, s.symbol, s.timeframe, s.last_ts, s.series_id
    FROM series s
    WHERE s.table_name = 'ohlcv' AND s.last_ts IS NOT NULL
      AND cryptoflow_timeframe_interval(s.timeframe) IS NOT NULL
    ORDER BY s.exchange, s.symbol, cryptoflow_timeframe_interval(s.timeframe), s.timeframe;

    CREATE MATERIALIZED VIEW market_overview AS
    SELECT b.exchange, b.symbol, b.timeframe, b.last_ts AS as_of,
           p.last_price,
           p.price_24h_ago,
           (p.last_price / p.price_24h_ago - 1) * 100 AS change_24h_pct,
           w.volume_24h, w.high_24h, w.low_24h, w.candles_24h
    FROM ohlcv_series_base b
    CROSS JOIN LATERAL (
        SELECT cryptoflow_close_at(b.series_id, b.last_ts) AS last_price,
               cryptoflow_close_at(b.series_id, b.last_ts - interval '24 hours') AS price_24h_ago
    ) p
    CROSS JOIN LATERAL (
        SELECT sum(o.volume) AS volume_24h, max(o.high) AS high_24h, min(o.low) AS low_24h, count(*) AS candles_24h
        FROM ohlcv o
        WHERE o.series_id = b.series_id AND o.ts > b.last_ts - interval '24 hours' AND o.ts <= b.last_ts
    ) w;
    CREATE UNIQUE INDEX market_overview_key ON market_overview (exchange, symbol);

    CREATE MATERIALIZED VIEW performance AS
    SELECT b.exchange, b.symbol, b.timeframe, b.last_ts AS as_of, p.last_price,
           (p.last_price / cryptoflow_close_at(b.series_id, b.last_ts - interval '1 hour') - 1) * 100 AS return_1h_pct,
           (p.last_price / cryptoflow_close_at(b.series_id, b.last_ts - interval '24 hours') - 1) * 100 AS return_24h_pct,
           (p.last_price / cryptoflow_close_at(b.series_id, b.last_ts - interval '7 days') - 1) * 100 AS return_7d_pct,
           (p.last_price / cryptoflow_close_at(b.series_id, b.last_ts - interval '30 days') - 1) * 100 AS return_30d_pct
    FROM ohlcv_series_base b
    CROSS JOIN LATERAL (SELECT cryptoflow_close_at(b.series_id, b.last_ts) AS last_price) p;
    CREATE UNIQUE INDEX performance_key ON performance (exchange, symbol);

    CREATE MATERIALIZED VIEW cross_exchange_spread AS
    SELECT x.symbol, x.exchange_a, x.exchange_b, x.as_of, x.price_a, x.price_b,
           abs(x.price_a - x.price_b) / least(x.price_a, x.price_b) * 100 AS spread_pct
    FROM (
        SELECT a.symbol, a.exchange AS exchange_a, b.exchange AS exchange_b, least(a.last_ts, b.last_ts) AS as_of,
               cryptoflow_close_at(a.series_id, least(a.last_ts, b.last_ts)) AS price_a,
               cryptoflow_close_at(b.series_id, least(a.last_ts, b.last_ts)) AS price_b
        FROM ohlcv_series_base a
        JOIN ohlcv_series_base b ON b.symbol = a.symbol AND a.exchange < b.exchange
    ) x
    WHERE x.price_a IS NOT NULL AND x.price_b IS NOT NULL;
    CREATE UNIQUE INDEX cross_exchange_spread_key ON cross_exchange_spread (symbol, exchange_a, exchange_b);

    GRANT SELECT ON ohlcv_series_base, market_overview, performance, cross_exchange_spread
    TO cryptoflow_loader, cryptoflow_reader;
"""

# The marts of 0004 as they were, for downgrade.
_OLD_MARTS = (
    MARTS_0004
    + """
    GRANT SELECT ON ohlcv_series_base, market_overview, performance, cross_exchange_spread
    TO cryptoflow_loader, cryptoflow_reader;
"""
)


def _key_to_series_id(table: str, series_columns: tuple[str, ...], rest: tuple[str, ...]) -> str:
    names = ", ".join(series_columns)
    timeframe = "timeframe" if "timeframe" in series_columns else "''"
    matches = " AND ".join(f"s.{c} = t.{c}" for c in series_columns)
    return f"""
    -- Rows loaded before their series row existed (the skeleton's ohlcv) get one, with their range,
    -- so the loader's append check sees them.
    INSERT INTO series (table_name, exchange, symbol, timeframe, first_ts, last_ts, rows_received)
    SELECT '{table}', exchange, symbol, {timeframe}, min(ts), max(ts), count(*)
    FROM {table} GROUP BY {names}
    ON CONFLICT (table_name, exchange, symbol, timeframe) DO NOTHING;
    ALTER TABLE {table} ADD COLUMN series_id bigint;
    UPDATE {table} t SET series_id = s.series_id
    FROM series s
    WHERE s.table_name = '{table}' AND {matches}{"" if "timeframe" in series_columns else " AND s.timeframe = ''"};
    ALTER TABLE {table} ALTER COLUMN series_id SET NOT NULL;
    ALTER TABLE {table} DROP CONSTRAINT {table}_pkey;
    ALTER TABLE {table} ADD CONSTRAINT {table}_pkey PRIMARY KEY (series_id, {", ".join(rest)});
    """


# The primary keys of 0002, for downgrade.
_NATURAL_KEYS = {
    "ohlcv": "exchange, symbol, timeframe, ts",
    "tickers": "exchange, symbol, ts",
    "order_books": "exchange, symbol, ts, side, level",
    "trades": "exchange, symbol, trade_id, ts",
    "indicators": "exchange, symbol, timeframe, ts",
}


def _series_id_to_key(table: str) -> str:
    return f"""
    ALTER TABLE {table} DROP CONSTRAINT {table}_pkey;
    ALTER TABLE {table} ADD CONSTRAINT {table}_pkey PRIMARY KEY ({_NATURAL_KEYS[table]});
    ALTER TABLE {table} DROP COLUMN series_id;
    """


def upgrade() -> None:
    run_sql(
        "ALTER TABLE series ADD COLUMN series_id bigint GENERATED ALWAYS AS IDENTITY;"
        "ALTER TABLE series ADD CONSTRAINT series_series_id_key UNIQUE (series_id);"
        + _DROP_MARTS
        + "DROP FUNCTION cryptoflow_close_at(text, text, text, timestamptz);"
        + "".join(_key_to_series_id(table, *columns) for table, columns in _TABLES.items())
        + _MARTS
    )


def downgrade() -> None:
    run_sql(
        _DROP_MARTS
        + "DROP FUNCTION cryptoflow_close_at(bigint, timestamptz);"
        + CLOSE_AT_0004
        + "".join(_series_id_to_key(table) for table in _TABLES)
        + "ALTER TABLE series DROP COLUMN series_id;"
        + _OLD_MARTS
    )
