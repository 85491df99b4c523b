"""Every silver table, range-partitioned by month on ts; the ledger grows lineage; series.

* ohlcv, tickers, order_books, trades, indicators: silver.py's columns, plus batch_id (the
  batch that last changed the row), loaded_at and version (1 on insert, +1 per update).
  Primary key = silver's natural key (+ ts where the key lacks it, decision 0021).
* Monthly partitions are created on demand by the loader through
  cryptoflow_ensure_month_partitions (SECURITY DEFINER: the loader role owns no table) and
  dropped by retention through cryptoflow_drop_partitions_before.
* The legacy (unpartitioned) ohlcv is copied into the partitioned one and dropped.
* series: one row per table·exchange·symbol·timeframe with its time range and batch quality,
  kept by the loader in each batch's transaction (freshness marts, append fast path).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from cryptoflow_warehouse_loader.revisions.ddl import run_sql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql("""
    CREATE FUNCTION cryptoflow_ensure_month_partitions(parent regclass, from_ts timestamptz, to_ts timestamptz)
    RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
    DECLARE
        month timestamp := date_trunc('month', from_ts AT TIME ZONE 'UTC');
        schema_name text;
        table_name text;
        partition_name text;
        created integer := 0;
    BEGIN
        SELECT n.nspname, c.relname INTO schema_name, table_name
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.oid = parent AND c.relkind = 'p';
        IF NOT FOUND THEN
            RAISE EXCEPTION '% is not a partitioned table', parent;
        END IF;
        WHILE month <= to_ts AT TIME ZONE 'UTC' LOOP
            partition_name := table_name || '_' || to_char(month, 'YYYYMM');
            IF to_regclass(format('%I.%I', schema_name, partition_name)) IS NULL THEN
                BEGIN
                    EXECUTE format(
                        'CREATE TABLE %I.%I PARTITION OF %I.%I FOR VALUES FROM (%L) TO (%L)',
                        schema_name, partition_name, schema_name, table_name,
                        month AT TIME ZONE 'UTC', (month + interval '1 month') AT TIME ZONE 'UTC'
                    );
                    created := created + 1;
                EXCEPTION WHEN duplicate_table THEN
                    -- Another loader created it between our check and CREATE: it exists, as wanted.
                    NULL;
                END;
            END IF;
            month := month + interval '1 month';
        END LOOP;
        RETURN created;
    END
    $$;

    CREATE FUNCTION cryptoflow_drop_partitions_before(parent regclass, cutoff timestamptz)
    RETURNS SETOF text
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
    DECLARE
        part record;
    BEGIN
        -- Only our own monthly partitions (<table>_YYYYMM) whose whole month ends before the cutoff.
        FOR part IN
            SELECT n.nspname AS schema_name, c.relname AS partition_name
            FROM pg_inherits i
            JOIN pg_class c ON c.oid = i.inhrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            JOIN pg_class p ON p.oid = i.inhparent
            WHERE i.inhparent = parent
              AND c.relname ~ ('^' || p.relname || '_[0-9]{6}$')
              AND (to_timestamp(right(c.relname, 6), 'YYYYMM')::timestamp + interval '1 month')
                  <= cutoff AT TIME ZONE 'UTC'
            ORDER BY c.relname
        LOOP
            EXECUTE format('DROP TABLE %I.%I', part.schema_name, part.partition_name);
            RETURN NEXT part.partition_name;
        END LOOP;
    END
    $$;

    -- The skeleton's ohlcv becomes the first partitioned table; its rows are kept.
    ALTER TABLE ohlcv RENAME TO ohlcv_legacy;
    ALTER TABLE ohlcv_legacy RENAME CONSTRAINT ohlcv_pkey TO ohlcv_legacy_pkey;
    ALTER INDEX ohlcv_ts_idx RENAME TO ohlcv_legacy_ts_idx;

    CREATE TABLE ohlcv (
        exchange        text             NOT NULL,
        symbol          text             NOT NULL,
        timeframe       text             NOT NULL,
        ts              timestamptz      NOT NULL,
        open            double precision NOT NULL,
        high            double precision NOT NULL,
        low             double precision NOT NULL,
        close           double precision NOT NULL,
        volume          double precision NOT NULL,
        resampled       boolean          NOT NULL,
        final           boolean          NOT NULL,
        source_event_id text             NOT NULL,
        batch_id        text             NOT NULL,
        loaded_at       timestamptz      NOT NULL DEFAULT now(),
        version         integer          NOT NULL DEFAULT 1,
        CONSTRAINT ohlcv_pkey PRIMARY KEY (exchange, symbol, timeframe, ts),
        CONSTRAINT ohlcv_prices_positive CHECK (open > 0 AND high > 0 AND low > 0 AND close > 0),
        CONSTRAINT ohlcv_volume_not_negative CHECK (volume >= 0),
        CONSTRAINT ohlcv_high_not_below_low CHECK (high >= low)
    ) PARTITION BY RANGE (ts);

    CREATE TABLE tickers (
        exchange        text             NOT NULL,
        symbol          text             NOT NULL,
        ts              timestamptz      NOT NULL,
        bid             double precision,
        ask             double precision,
        last            double precision,
        high            double precision,
        low             double precision,
        base_volume     double precision,
        quote_volume    double precision,
        source_event_id text             NOT NULL,
        batch_id        text             NOT NULL,
        loaded_at       timestamptz      NOT NULL DEFAULT now(),
        version         integer          NOT NULL DEFAULT 1,
        CONSTRAINT tickers_pkey PRIMARY KEY (exchange, symbol, ts),
        CONSTRAINT tickers_prices_positive CHECK (bid > 0 AND ask > 0 AND last > 0 AND high > 0 AND low > 0),
        CONSTRAINT tickers_volumes_not_negative CHECK (base_volume >= 0 AND quote_volume >= 0),
        CONSTRAINT tickers_high_not_below_low CHECK (high >= low)
    ) PARTITION BY RANGE (ts);

    -- One row per price level (decision 0022).
    CREATE TABLE order_books (
        exchange        text             NOT NULL,
        symbol          text             NOT NULL,
        ts              timestamptz      NOT NULL,
        side            text             NOT NULL,
        level           bigint           NOT NULL,
        price           double precision NOT NULL,
        amount          double precision NOT NULL,
        source_event_id text             NOT NULL,
        batch_id        text             NOT NULL,
        loaded_at       timestamptz      NOT NULL DEFAULT now(),
        version         integer          NOT NULL DEFAULT 1,
        CONSTRAINT order_books_pkey PRIMARY KEY (exchange, symbol, ts, side, level),
        CONSTRAINT order_books_side CHECK (side IN ('bid', 'ask')),
        CONSTRAINT order_books_level_not_negative CHECK (level >= 0),
        CONSTRAINT order_books_price_positive CHECK (price > 0),
        CONSTRAINT order_books_amount_not_negative CHECK (amount >= 0)
    ) PARTITION BY RANGE (ts);

    CREATE TABLE trades (
        exchange        text             NOT NULL,
        symbol          text             NOT NULL,
        trade_id        text             NOT NULL,
        ts              timestamptz      NOT NULL,
        price           double precision NOT NULL,
        amount          double precision NOT NULL,
        side            text,
        source_event_id text             NOT NULL,
        batch_id        text             NOT NULL,
        loaded_at       timestamptz      NOT NULL DEFAULT now(),
        version         integer          NOT NULL DEFAULT 1,
        CONSTRAINT trades_pkey PRIMARY KEY (exchange, symbol, trade_id, ts),
        CONSTRAINT trades_price_positive CHECK (price > 0),
        CONSTRAINT trades_amount_positive CHECK (amount > 0),
        CONSTRAINT trades_side CHECK (side IN ('buy', 'sell'))
    ) PARTITION BY RANGE (ts);

    CREATE TABLE indicators (
        exchange        text             NOT NULL,
        symbol          text             NOT NULL,
        timeframe       text             NOT NULL,
        ts              timestamptz      NOT NULL,
        rsi_14          double precision,
        macd            double precision,
        macd_signal     double precision,
        macd_hist       double precision,
        bb_mid          double precision,
        bb_upper        double precision,
        bb_lower        double precision,
        vwap            double precision,
        source_event_id text             NOT NULL,
        batch_id        text             NOT NULL,
        loaded_at       timestamptz      NOT NULL DEFAULT now(),
        version         integer          NOT NULL DEFAULT 1,
        CONSTRAINT indicators_pkey PRIMARY KEY (exchange, symbol, timeframe, ts),
        CONSTRAINT indicators_rsi_range CHECK (rsi_14 BETWEEN 0 AND 100),
        CONSTRAINT indicators_bands_ordered CHECK (bb_upper >= bb_lower)
    ) PARTITION BY RANGE (ts);

    -- Dashboards read one series over a time range (the primary key serves that) or everything
    -- in a time range: BRIN on ts costs next to nothing to maintain on append-mostly data.
    CREATE INDEX ohlcv_ts_brin ON ohlcv USING brin (ts);
    CREATE INDEX tickers_ts_brin ON tickers USING brin (ts);
    CREATE INDEX order_books_ts_brin ON order_books USING brin (ts);
    CREATE INDEX trades_ts_brin ON trades USING brin (ts);
    CREATE INDEX indicators_ts_brin ON indicators USING brin (ts);

    SELECT cryptoflow_ensure_month_partitions('ohlcv', min(ts), max(ts)) FROM ohlcv_legacy HAVING count(*) > 0;
    INSERT INTO ohlcv (exchange, symbol, timeframe, ts, open, high, low, close, volume,
                       resampled, final, source_event_id, batch_id, loaded_at)
    SELECT exchange, symbol, timeframe, ts, open, high, low, close, volume,
           false, true, 'unknown: loaded before lineage', batch_id, loaded_at
    FROM ohlcv_legacy;
    DROP TABLE ohlcv_legacy;
    -- The skeleton's migration runner's bookkeeping; Alembic's alembic_version replaces it.
    DROP TABLE IF EXISTS schema_migrations;

    ALTER TABLE batches
        ADD COLUMN exchange         text,
        ADD COLUMN lake_url         text,
        ADD COLUMN silver_sha256    text,
        ADD COLUMN min_ts           timestamptz,
        ADD COLUMN max_ts           timestamptz,
        ADD COLUMN quarantined_rows integer,
        ADD COLUMN load_path        text,
        ADD COLUMN run_id           text,
        ADD COLUMN duration_ms      double precision;
    CREATE INDEX batches_loaded_at_idx ON batches (loaded_at);
    CREATE INDEX batches_run_idx ON batches (run_id);

    CREATE TABLE series (
        table_name     text             NOT NULL,
        exchange       text             NOT NULL,
        symbol         text             NOT NULL,
        timeframe      text             NOT NULL DEFAULT '',
        dataset        text,
        first_ts       timestamptz,
        last_ts        timestamptz,
        rows_received  bigint           NOT NULL DEFAULT 0,
        batches        integer          NOT NULL DEFAULT 0,
        quality_sum    double precision NOT NULL DEFAULT 0,
        min_quality    double precision,
        last_quality   double precision,
        last_batch_id  text,
        last_loaded_at timestamptz,
        CONSTRAINT series_pkey PRIMARY KEY (table_name, exchange, symbol, timeframe)
    );
    """)


def downgrade() -> None:
    run_sql("""
    DROP TABLE series;
    DROP INDEX batches_run_idx;
    DROP INDEX batches_loaded_at_idx;
    ALTER TABLE batches
        DROP COLUMN exchange, DROP COLUMN lake_url, DROP COLUMN silver_sha256, DROP COLUMN min_ts,
        DROP COLUMN max_ts, DROP COLUMN quarantined_rows, DROP COLUMN load_path, DROP COLUMN run_id,
        DROP COLUMN duration_ms;
    DROP TABLE tickers, order_books, trades, indicators;
    ALTER TABLE ohlcv RENAME TO ohlcv_partitioned;
    ALTER TABLE ohlcv_partitioned RENAME CONSTRAINT ohlcv_pkey TO ohlcv_partitioned_pkey;
    CREATE TABLE ohlcv (
        exchange text NOT NULL, symbol text NOT NULL, timeframe text NOT NULL, ts timestamptz NOT NULL,
        open double precision NOT NULL, high double precision NOT NULL, low double precision NOT NULL,
        close double precision NOT NULL, volume double precision NOT NULL,
        batch_id text NOT NULL, loaded_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (exchange, symbol, timeframe, ts),
        CHECK (open > 0 AND high > 0 AND low > 0 AND close > 0 AND volume >= 0),
        CHECK (high >= low)
    );
    CREATE INDEX ohlcv_ts_idx ON ohlcv (ts);
    INSERT INTO ohlcv (exchange, symbol, timeframe, ts, open, high, low, close, volume, batch_id, loaded_at)
    SELECT exchange, symbol, timeframe, ts, open, high, low, close, volume, batch_id, loaded_at
    FROM ohlcv_partitioned;
    DROP TABLE ohlcv_partitioned;
    DROP FUNCTION cryptoflow_drop_partitions_before(regclass, timestamptz);
    DROP FUNCTION cryptoflow_ensure_month_partitions(regclass, timestamptz, timestamptz);
    """)
