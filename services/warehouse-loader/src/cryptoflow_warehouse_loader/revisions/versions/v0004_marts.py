"""Analytics marts over ohlcv (decision 0023).

Every mart starts from `ohlcv_series_base`: per exchange·symbol the finest timeframe loaded and
its latest candle, read from `series` (small), so each mart does a handful of primary-key
lookups per series instead of scanning ohlcv. Windows are relative to the series' latest candle,
not to now(), so a backfill of 2019 data gets meaningful numbers too.

* market_overview (materialized): last price, 24h change %, 24h volume/high/low.
* performance (materialized): returns over 1h, 24h, 7d, 30d.
* cross_exchange_spread (materialized): same symbol on two exchanges, at their latest common time.
* data_freshness (view, always live): per series of every table, lag behind now, batch quality
  (from batches.quality_score via series), known gaps.

The loader refreshes the materialized ones (CONCURRENTLY: readers never block) after loads
through cryptoflow_refresh_marts().

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from cryptoflow_warehouse_loader.revisions.ddl import run_sql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


CLOSE_AT = """
    -- Close of the latest candle at or before `at`: one backward primary-key probe.
    CREATE FUNCTION cryptoflow_close_at(p_exchange text, p_symbol text, p_timeframe text, p_at timestamptz)
    RETURNS double precision
    LANGUAGE sql STABLE PARALLEL SAFE
    BEGIN ATOMIC
        SELECT o.close FROM ohlcv o
        WHERE o.exchange = p_exchange AND o.symbol = p_symbol AND o.timeframe = p_timeframe AND o.ts <= p_at
        ORDER BY o.ts DESC
        LIMIT 1;
    END;
"""

# The ohlcv marts as this revision made them (0006's downgrade restores them and CLOSE_AT from here).
MARTS = """
    CREATE VIEW ohlcv_series_base AS
    SELECT DISTINCT ON (s.exchange, s.symbol) s.exchange, s.symbol, s.timeframe, s.last_ts
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
        SELECT cryptoflow_close_at(b.exchange, b.symbol, b.timeframe, b.last_ts) AS last_price,
               cryptoflow_close_at(b.exchange, b.symbol, b.timeframe, b.last_ts - interval '24 hours') AS price_24h_ago
    ) p
    CROSS JOIN LATERAL (
        SELECT sum(o.volume) AS volume_24h, max(o.high) AS high_24h, min(o.low) AS low_24h, count(*) AS candles_24h
        FROM ohlcv o
        WHERE o.exchange = b.exchange AND o.symbol = b.symbol AND o.timeframe = b.timeframe
          AND o.ts > b.last_ts - interval '24 hours' AND o.ts <= b.last_ts
    ) w;
    CREATE UNIQUE INDEX market_overview_key ON market_overview (exchange, symbol);

    CREATE MATERIALIZED VIEW performance AS
    SELECT b.exchange, b.symbol, b.timeframe, b.last_ts AS as_of, p.last_price,
           (p.last_price / cryptoflow_close_at(b.exchange, b.symbol, b.timeframe, b.last_ts - interval '1 hour') - 1) * 100
               AS return_1h_pct,
           (p.last_price / cryptoflow_close_at(b.exchange, b.symbol, b.timeframe, b.last_ts - interval '24 hours') - 1) * 100
               AS return_24h_pct,
           (p.last_price / cryptoflow_close_at(b.exchange, b.symbol, b.timeframe, b.last_ts - interval '7 days') - 1) * 100
               AS return_7d_pct,
           (p.last_price / cryptoflow_close_at(b.exchange, b.symbol, b.timeframe, b.last_ts - interval '30 days') - 1) * 100
               AS return_30d_pct
    FROM ohlcv_series_base b
    CROSS JOIN LATERAL (SELECT cryptoflow_close_at(b.exchange, b.symbol, b.timeframe, b.last_ts) AS last_price) p;
    CREATE UNIQUE INDEX performance_key ON performance (exchange, symbol);

    CREATE MATERIALIZED VIEW cross_exchange_spread AS
    SELECT x.symbol, x.exchange_a, x.exchange_b, x.as_of, x.price_a, x.price_b,
           abs(x.price_a - x.price_b) / least(x.price_a, x.price_b) * 100 AS spread_pct
    FROM (
        SELECT a.symbol, a.exchange AS exchange_a, b.exchange AS exchange_b, least(a.last_ts, b.last_ts) AS as_of,
               cryptoflow_close_at(a.exchange, a.symbol, a.timeframe, least(a.last_ts, b.last_ts)) AS price_a,
               cryptoflow_close_at(b.exchange, b.symbol, b.timeframe, least(a.last_ts, b.last_ts)) AS price_b
        FROM ohlcv_series_base a
        JOIN ohlcv_series_base b ON b.symbol = a.symbol AND a.exchange < b.exchange
    ) x
    WHERE x.price_a IS NOT NULL AND x.price_b IS NOT NULL;
    CREATE UNIQUE INDEX cross_exchange_spread_key ON cross_exchange_spread (symbol, exchange_a, exchange_b);
"""


def upgrade() -> None:
    run_sql(
        """
    CREATE FUNCTION cryptoflow_timeframe_interval(timeframe text) RETURNS interval
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN substring(timeframe FROM '^([0-9]+)[mhdwM]$')::integer * CASE right(timeframe, 1)
        WHEN 'm' THEN interval '1 minute'
        WHEN 'h' THEN interval '1 hour'
        WHEN 'd' THEN interval '1 day'
        WHEN 'w' THEN interval '7 days'
        WHEN 'M' THEN interval '1 month'
    END;

    """
        + CLOSE_AT
        + MARTS
        + """

    CREATE VIEW data_freshness AS
    SELECT s.table_name, s.dataset, s.exchange, s.symbol, s.timeframe, s.first_ts, s.last_ts,
           -- A candle stamped t covers [t, t + timeframe): data is complete up to its end.
           s.last_ts + coalesce(cryptoflow_timeframe_interval(nullif(s.timeframe, '')), interval '0') AS covered_until,
           now() - (s.last_ts + coalesce(cryptoflow_timeframe_interval(nullif(s.timeframe, '')), interval '0')) AS lag,
           s.last_loaded_at, s.rows_received, s.batches,
           s.quality_sum / nullif(s.batches, 0) AS avg_quality, s.min_quality, s.last_quality,
           coalesce(g.gaps, 0) AS known_gaps, coalesce(g.missing, 0) AS known_missing
    FROM series s
    LEFT JOIN LATERAL (
        SELECT count(*) AS gaps, sum(k.missing) AS missing
        FROM known_gaps k
        WHERE k.exchange = s.exchange AND k.symbol = s.symbol AND k.dataset = s.dataset AND k.timeframe = s.timeframe
    ) g ON true;

    CREATE FUNCTION cryptoflow_refresh_marts() RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
    AS $$
    BEGIN
        REFRESH MATERIALIZED VIEW CONCURRENTLY market_overview;
        REFRESH MATERIALIZED VIEW CONCURRENTLY performance;
        REFRESH MATERIALIZED VIEW CONCURRENTLY cross_exchange_spread;
    END
    $$;
    """
    )


def downgrade() -> None:
    run_sql("""
    DROP FUNCTION cryptoflow_refresh_marts();
    DROP VIEW data_freshness;
    DROP MATERIALIZED VIEW cross_exchange_spread;
    DROP MATERIALIZED VIEW performance;
    DROP MATERIALIZED VIEW market_overview;
    DROP VIEW ohlcv_series_base;
    DROP FUNCTION cryptoflow_close_at(text, text, text, timestamptz);
    DROP FUNCTION cryptoflow_timeframe_interval(text);
    """)
