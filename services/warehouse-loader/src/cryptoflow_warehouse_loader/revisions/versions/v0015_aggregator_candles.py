"""Aggregators' candles in their own table (issue 13, decision 0055).

* aggregator_candles_data (monthly partitions on ts, like every silver table), keyed by series·ts:
  a provider's closed candles of a coin in USD (CoinGecko's ohlc, 4 hours; CoinPaprika's
  ohlcv/historical, daily), series provider·coin id·timeframe as aggregator_prices' (exchange =
  the provider, symbol = its coin id), ts the candle's open time. volume (USD) and market_cap
  are null where the provider gives none (CoinGecko's candles have neither).
* its view `aggregator_candles`: silver's columns, then series_id, batch_id, loaded_at, version.

Not rows of `ohlcv`: an aggregator's candle is an average over many markets, not one market's
trades, and ohlcv's marts (market_overview, cross_exchange_spread) compare exchange markets.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

from cryptoflow_warehouse_loader.revisions.ddl import run_sql

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql("""
    CREATE TABLE aggregator_candles_data (
        series_id       bigint           NOT NULL,
        ts              timestamptz      NOT NULL,
        open            double precision NOT NULL,
        high            double precision NOT NULL,
        low             double precision NOT NULL,
        close           double precision NOT NULL,
        volume          double precision,
        market_cap      double precision,
        source_event_id text             NOT NULL,
        batch_no        bigint           NOT NULL,
        loaded_at       timestamptz      NOT NULL DEFAULT now(),
        version         integer          NOT NULL DEFAULT 1,
        CONSTRAINT aggregator_candles_data_pkey PRIMARY KEY (series_id, ts),
        CONSTRAINT aggregator_candles_prices_positive CHECK (open > 0 AND high > 0 AND low > 0 AND close > 0),
        CONSTRAINT aggregator_candles_high_not_below_low CHECK (high >= low),
        CONSTRAINT aggregator_candles_values_not_negative CHECK (volume >= 0 AND market_cap >= 0)
    ) PARTITION BY RANGE (ts);
    CREATE INDEX aggregator_candles_data_ts_brin ON aggregator_candles_data USING brin (ts);
    GRANT SELECT, INSERT, UPDATE ON aggregator_candles_data TO cryptoflow_loader;

    CREATE VIEW aggregator_candles AS
    SELECT s.exchange, s.symbol, s.timeframe, d.ts, d.open, d.high, d.low, d.close, d.volume, d.market_cap,
           d.source_event_id,
           d.series_id, b.batch_id, d.loaded_at, d.version
    FROM aggregator_candles_data d
    LEFT JOIN series s ON s.series_id = d.series_id
    LEFT JOIN batches b ON b.batch_no = d.batch_no;
    GRANT SELECT ON aggregator_candles TO cryptoflow_loader, cryptoflow_reader;
    """)


def downgrade() -> None:
    run_sql("""
    DROP VIEW aggregator_candles;
    DROP TABLE aggregator_candles_data;
    DELETE FROM series WHERE table_name = 'aggregator_candles';
    """)
