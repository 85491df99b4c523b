"""Aggregators' market snapshots and price histories, the asset registry and the `price_divergence` mart (issue 13).

* market_snapshots_data (monthly partitions on ts, like every silver table) and its view
  `market_snapshots` with silver's columns: the series is provider·asset, so `exchange` holds the
  provider (coingecko, coinpaprika) and `symbol` the provider's coin id (bitcoin, btc-bitcoin);
  `asset_symbol` is the coin's ticker. `asset_market_snapshots` names them as a reader expects:
  source, asset_id, symbol (the ticker), base (the exchanges' base symbol the registry maps the
  coin to, null when it cannot tell), name, ts and the values.
* aggregator_prices_data and its view `aggregator_prices`: a provider's price history of a coin
  (CoinGecko's market_chart/range, CoinPaprika's historical tickers), series provider·coin id as
  above: price, market cap and 24 h volume per point.
* asset_registry: provider coin id → the exchanges' base symbol, seeded with well-known coins and
  edited by the operator (the schema owner). `asset_map` resolves every coin the warehouse holds:
  a registry row wins (`mapping` = registry); else the coin's ticker, when no other coin of the
  same provider has that ticker and no registry row maps another coin to it (`unique_ticker`);
  else none (`collision`): two coins with one ticker (CoinGecko lists dozens of "BTC"s) are never
  matched to an exchange market by guess.
* price_divergence (view): per aggregator snapshot of a mapped coin and per exchange market of
  its base against USDT or USD (1m candles), the aggregator's price against the exchange's close
  of the minute that ended at or before the snapshot (an aggregator's price "at 12:05:00" is the
  last trade before it: the close of the 12:04 candle), in percent. The warehouse-loader's
  `price_divergence` alert rules read it.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

from cryptoflow_warehouse_loader.revisions.ddl import run_sql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# Provider ids of coins whose ticker other coins share too: the registry says which is which.
_SEED = [
    ("bitcoin", "btc-bitcoin", "BTC"),
    ("ethereum", "eth-ethereum", "ETH"),
    ("binancecoin", "bnb-binance-coin", "BNB"),
    ("solana", "sol-solana", "SOL"),
    ("ripple", "xrp-xrp", "XRP"),
    ("cardano", "ada-cardano", "ADA"),
    ("dogecoin", "doge-dogecoin", "DOGE"),
    ("tron", "trx-tron", "TRX"),
    ("litecoin", "ltc-litecoin", "LTC"),
    ("dash", "dash-dash", "DASH"),
    ("tether", "usdt-tether", "USDT"),
    ("usd-coin", "usdc-usd-coin", "USDC"),
]


def _seed_rows() -> str:
    rows = []
    for gecko, paprika, base in _SEED:
        rows.append(f"('coingecko', '{gecko}', '{base}')")
        rows.append(f"('coinpaprika', '{paprika}', '{base}')")
    return ",\n        ".join(rows)


def upgrade() -> None:
    run_sql(f"""
    CREATE TABLE market_snapshots_data (
        series_id          bigint           NOT NULL,
        ts                 timestamptz      NOT NULL,
        asset_symbol       text             NOT NULL,
        name               text,
        price_usd          double precision NOT NULL,
        market_cap_usd     double precision,
        volume_24h_usd     double precision,
        circulating_supply double precision,
        total_supply       double precision,
        max_supply         double precision,
        rank               bigint,
        pct_change_24h     double precision,
        source_event_id    text             NOT NULL,
        batch_no           bigint           NOT NULL,
        loaded_at          timestamptz      NOT NULL DEFAULT now(),
        version            integer          NOT NULL DEFAULT 1,
        CONSTRAINT market_snapshots_data_pkey PRIMARY KEY (series_id, ts),
        CONSTRAINT market_snapshots_price_positive CHECK (price_usd > 0)
    ) PARTITION BY RANGE (ts);
    CREATE INDEX market_snapshots_data_ts_brin ON market_snapshots_data USING brin (ts);
    GRANT SELECT, INSERT, UPDATE ON market_snapshots_data TO cryptoflow_loader;

    CREATE VIEW market_snapshots AS
    SELECT s.exchange, s.symbol, d.ts, d.asset_symbol, d.name, d.price_usd, d.market_cap_usd, d.volume_24h_usd,
           d.circulating_supply, d.total_supply, d.max_supply, d.rank, d.pct_change_24h, d.source_event_id,
           d.series_id, b.batch_id, d.loaded_at, d.version
    FROM market_snapshots_data d
    LEFT JOIN series s ON s.series_id = d.series_id
    LEFT JOIN batches b ON b.batch_no = d.batch_no;
    GRANT SELECT ON market_snapshots TO cryptoflow_loader, cryptoflow_reader;

    CREATE TABLE aggregator_prices_data (
        series_id       bigint           NOT NULL,
        ts              timestamptz      NOT NULL,
        price_usd       double precision NOT NULL,
        market_cap_usd  double precision,
        volume_24h_usd  double precision,
        source_event_id text             NOT NULL,
        batch_no        bigint           NOT NULL,
        loaded_at       timestamptz      NOT NULL DEFAULT now(),
        version         integer          NOT NULL DEFAULT 1,
        CONSTRAINT aggregator_prices_data_pkey PRIMARY KEY (series_id, ts),
        CONSTRAINT aggregator_prices_price_positive CHECK (price_usd > 0)
    ) PARTITION BY RANGE (ts);
    CREATE INDEX aggregator_prices_data_ts_brin ON aggregator_prices_data USING brin (ts);
    GRANT SELECT, INSERT, UPDATE ON aggregator_prices_data TO cryptoflow_loader;

    CREATE VIEW aggregator_prices AS
    SELECT s.exchange, s.symbol, d.ts, d.price_usd, d.market_cap_usd, d.volume_24h_usd, d.source_event_id,
           d.series_id, b.batch_id, d.loaded_at, d.version
    FROM aggregator_prices_data d
    LEFT JOIN series s ON s.series_id = d.series_id
    LEFT JOIN batches b ON b.batch_no = d.batch_no;
    GRANT SELECT ON aggregator_prices TO cryptoflow_loader, cryptoflow_reader;

    CREATE TABLE asset_registry (
        source   text NOT NULL,
        asset_id text NOT NULL,
        base     text NOT NULL,
        note     text,
        CONSTRAINT asset_registry_pkey PRIMARY KEY (source, asset_id)
    );
    INSERT INTO asset_registry (source, asset_id, base) VALUES
        {_seed_rows()};
    GRANT SELECT ON asset_registry TO cryptoflow_loader, cryptoflow_reader;

    CREATE VIEW asset_map AS
    WITH latest AS (
        SELECT DISTINCT ON (d.series_id) s.exchange AS source, s.symbol AS asset_id, d.asset_symbol, d.name
        FROM market_snapshots_data d
        JOIN series s ON s.series_id = d.series_id
        ORDER BY d.series_id, d.ts DESC
    )
    SELECT l.source, l.asset_id, l.asset_symbol, l.name,
           CASE
               WHEN r.base IS NOT NULL THEN r.base
               WHEN NOT ticker.shared THEN upper(l.asset_symbol)
           END AS base,
           CASE
               WHEN r.base IS NOT NULL THEN 'registry'
               WHEN NOT ticker.shared THEN 'unique_ticker'
               ELSE 'collision'
           END AS mapping
    FROM latest l
    LEFT JOIN asset_registry r ON r.source = l.source AND r.asset_id = l.asset_id
    CROSS JOIN LATERAL (
        SELECT EXISTS (
                   SELECT FROM latest o
                   WHERE o.source = l.source AND o.asset_id <> l.asset_id
                     AND upper(o.asset_symbol) = upper(l.asset_symbol)
               )
               OR EXISTS (
                   SELECT FROM asset_registry c
                   WHERE c.source = l.source AND c.asset_id <> l.asset_id AND c.base = upper(l.asset_symbol)
               ) AS shared
    ) ticker;
    GRANT SELECT ON asset_map TO cryptoflow_loader, cryptoflow_reader;

    CREATE VIEW asset_market_snapshots AS
    SELECT m.exchange AS source, m.symbol AS asset_id, m.asset_symbol AS symbol, a.base, a.mapping, m.name, m.ts,
           m.price_usd, m.market_cap_usd, m.volume_24h_usd, m.circulating_supply, m.total_supply, m.max_supply,
           m.rank, m.pct_change_24h, m.batch_id, m.loaded_at
    FROM market_snapshots m
    LEFT JOIN asset_map a ON a.source = m.exchange AND a.asset_id = m.symbol;
    GRANT SELECT ON asset_market_snapshots TO cryptoflow_loader, cryptoflow_reader;

    CREATE VIEW price_divergence AS
    SELECT a.source, a.asset_id, a.base, o.exchange, o.symbol, d.ts,
           date_trunc('minute', d.ts) - interval '1 minute' AS candle_ts,
           d.price_usd AS aggregator_price, c.close AS exchange_close,
           (d.price_usd / c.close - 1) * 100 AS divergence_pct
    FROM market_snapshots_data d
    JOIN series ms ON ms.series_id = d.series_id
    JOIN asset_map a ON a.source = ms.exchange AND a.asset_id = ms.symbol AND a.base IS NOT NULL
    JOIN series o ON o.table_name = 'ohlcv' AND o.timeframe = '1m'
                 AND o.symbol IN (a.base || '/USDT', a.base || '/USD')
    JOIN ohlcv_data c ON c.series_id = o.series_id AND c.ts = date_trunc('minute', d.ts) - interval '1 minute';
    GRANT SELECT ON price_divergence TO cryptoflow_loader, cryptoflow_reader;
    """)


def downgrade() -> None:
    run_sql("""
    DROP VIEW price_divergence;
    DROP VIEW asset_market_snapshots;
    DROP VIEW asset_map;
    DROP TABLE asset_registry;
    DROP VIEW aggregator_prices;
    DROP TABLE aggregator_prices_data;
    DROP VIEW market_snapshots;
    DROP TABLE market_snapshots_data;
    DELETE FROM series WHERE table_name IN ('market_snapshots', 'aggregator_prices');
    """)
