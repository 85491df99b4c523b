"""Binance's aggregate trades (bulk archives' `aggTrades`) in their own table (issue 13, decision 0056).

* agg_trades_data (monthly partitions on ts, like every silver table), keyed by series·ts·agg_id:
  an aggregate trade is the fills of one taker order at one price and time, trades
  first_trade_id..last_trade_id of the `trades` table. Its id is not a trade id (Binance counts
  aggregates apart), which is why it is not a row of `trades`.
* its view `agg_trades`: silver's columns, then series_id, batch_id, loaded_at, version.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

from cryptoflow_warehouse_loader.revisions.ddl import run_sql

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql("""
    CREATE TABLE agg_trades_data (
        series_id       bigint           NOT NULL,
        agg_id          text             NOT NULL,
        ts              timestamptz      NOT NULL,
        price           double precision NOT NULL,
        amount          double precision NOT NULL,
        first_trade_id  text,
        last_trade_id   text,
        side            text,
        maker_side      text,
        source_event_id text             NOT NULL,
        batch_no        bigint           NOT NULL,
        loaded_at       timestamptz      NOT NULL DEFAULT now(),
        version         integer          NOT NULL DEFAULT 1,
        CONSTRAINT agg_trades_data_pkey PRIMARY KEY (series_id, ts, agg_id),
        CONSTRAINT agg_trades_price_positive CHECK (price > 0),
        CONSTRAINT agg_trades_amount_positive CHECK (amount > 0),
        CONSTRAINT agg_trades_side CHECK (side IN ('buy', 'sell')),
        CONSTRAINT agg_trades_maker_side CHECK (maker_side IN ('buy', 'sell'))
    ) PARTITION BY RANGE (ts);
    CREATE INDEX agg_trades_data_ts_brin ON agg_trades_data USING brin (ts);
    GRANT SELECT, INSERT, UPDATE ON agg_trades_data TO cryptoflow_loader;

    CREATE VIEW agg_trades AS
    SELECT s.exchange, s.symbol, d.agg_id, d.ts, d.price, d.amount, d.first_trade_id, d.last_trade_id,
           d.side, d.maker_side, d.source_event_id,
           d.series_id, b.batch_id, d.loaded_at, d.version
    FROM agg_trades_data d
    LEFT JOIN series s ON s.series_id = d.series_id
    LEFT JOIN batches b ON b.batch_no = d.batch_no;
    GRANT SELECT ON agg_trades TO cryptoflow_loader, cryptoflow_reader;
    """)


def downgrade() -> None:
    run_sql("""
    DROP VIEW agg_trades;
    DROP TABLE agg_trades_data;
    DELETE FROM series WHERE table_name = 'agg_trades';
    """)
