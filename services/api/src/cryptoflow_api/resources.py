"""What the API serves: one declaration per resource (its relation, key, filters), read by the routes,
the query builder and the OpenAPI document. Adding a resource is adding an entry here."""

from __future__ import annotations

from dataclasses import dataclass, field

# Filters a resource may offer, each an equality on a column: name → what it means.
FILTER_DESCRIPTIONS = {
    "exchange": "Exchange id, e.g. binance",
    "symbol": "Market, e.g. BTC/USDT",
    "timeframe": "Candle timeframe, e.g. 1m, 5m, 1h",
    "dataset": "Dataset: ohlcv, ticker, orderbook or trades",
    "table": "Warehouse table: ohlcv, tickers, order_books, trades or indicators",
    "service": "Service name, e.g. warehouse-loader",
    "rule": "Alert rule name",
    "kind": "Kind (known gaps: no_records or archive_missing; alerts: the rule's kind)",
}


@dataclass(frozen=True)
class Resource:
    """One endpoint's rows.

    `relation` is a view or table name (or a parenthesised subquery with an alias), `key` the
    columns that order it and are unique together (keyset pagination walks them), `filters` maps a
    query parameter to the column it must equal. A warehouse data table (`series_table`) is
    filtered through `series`: exchange/symbol/timeframe name series ids, and the rows are read
    by `series_id = ANY(…)`, one index range per series (decision 0026).
    """

    name: str
    description: str
    relation: str
    key: tuple[str, ...]
    filters: dict[str, str] = field(default_factory=dict)
    # Time range: rows whose `time_column` is in [start, end); with `time_end_column`, rows whose
    # [time_column, time_end_column] interval overlaps it.
    time_column: str | None = None
    time_end_column: str | None = None
    series_table: str | None = None
    # Columns of the relation not returned (ids internal to the warehouse).
    hidden: tuple[str, ...] = ()


_SERIES_FILTERS = {"exchange": "exchange", "symbol": "symbol", "timeframe": "timeframe"}
_DATA_HIDDEN = ("series_id", "batch_id")


def _data(name: str, description: str, key_rest: tuple[str, ...], *, timeframe: bool) -> Resource:
    filters = dict(_SERIES_FILTERS) if timeframe else {"exchange": "exchange", "symbol": "symbol"}
    return Resource(
        name=name,
        description=description,
        relation=name,
        key=("series_id", "ts", *key_rest),
        filters=filters,
        time_column="ts",
        series_table=name,
        hidden=_DATA_HIDDEN,
    )


_SERIES_CATALOGUE = """(
    SELECT s.series_id, s.table_name, s.dataset, s.exchange, s.symbol, s.timeframe, s.first_ts, s.last_ts,
           f.covered_until, extract(epoch FROM f.lag)::float8 AS lag_s, s.rows_received, s.batches,
           f.avg_quality, s.min_quality, s.last_quality, f.known_gaps, f.known_missing, s.last_loaded_at
    FROM series s
    JOIN data_freshness f USING (table_name, exchange, symbol, timeframe)
) AS catalogue"""

_STATS = """(
    SELECT o.exchange, o.symbol, o.timeframe, o.as_of, o.last_price, o.price_24h_ago, o.change_24h_pct,
           o.volume_24h, o.high_24h, o.low_24h, o.candles_24h,
           p.return_1h_pct, p.return_24h_pct, p.return_7d_pct, p.return_30d_pct
    FROM market_overview o
    LEFT JOIN performance p USING (exchange, symbol, timeframe)
) AS stats"""

_QUALITY = """(
    SELECT batch_no, batch_id, dataset, target_table, exchange, rows, rows_inserted, rows_updated,
           rows_unchanged, quarantined_rows, quality_score, min_ts, max_ts, loaded_at, silver_key, source_key
    FROM batches
) AS quality"""

_RUNS = """(
    SELECT run_id, service, instance, status, seq, started_at, reported_at, ended_at, counts::text AS counts,
           errors, last_error
    FROM service_runs
) AS runs"""

RESOURCES: dict[str, Resource] = {
    resource.name: resource
    for resource in (
        _data("ohlcv", "Candles, one row per exchange·symbol·timeframe·ts", (), timeframe=True),
        _data("trades", "Trades, one row per exchange·symbol·trade id", ("trade_id",), timeframe=False),
        _data("order_books", "Order book snapshots, one row per level", ("side", "level"), timeframe=False),
        _data("tickers", "Ticker snapshots", (), timeframe=False),
        _data("indicators", "Indicators of candle series (RSI, MACD, Bollinger bands, VWAP)", (), timeframe=True),
        _data(
            "agg_trades",
            "Aggregated trades (Binance's aggTrades), one row per exchange·symbol·agg id",
            ("agg_id",),
            timeframe=False,
        ),
        _data(
            "market_snapshots",
            "Aggregators' coin listings: exchange = the provider, symbol = its coin id (asset_symbol: the ticker)",
            (),
            timeframe=False,
        ),
        _data(
            "aggregator_prices",
            "Aggregators' hourly price history of a coin: exchange = the provider, symbol = its coin id",
            (),
            timeframe=False,
        ),
        _data(
            "aggregator_candles",
            "Aggregators' closed candles of a coin in USD: exchange = the provider, symbol = its coin id, "
            "ts = the open time (volume and market_cap null where the provider gives none)",
            (),
            timeframe=True,
        ),
        Resource(
            name="series",
            description="Catalogue: every exchange·symbol·dataset·timeframe with its time range, freshness and quality",
            relation=_SERIES_CATALOGUE,
            key=("series_id",),
            filters={**_SERIES_FILTERS, "dataset": "dataset", "table": "table_name"},
            time_column="first_ts",
            time_end_column="last_ts",
        ),
        Resource(
            name="gaps",
            description="Known gaps: intervals a source has no records for, or a bulk archive lacks",
            relation="known_gaps",
            key=("exchange", "symbol", "dataset", "timeframe", "gap_start", "gap_end", "kind"),
            filters={**_SERIES_FILTERS, "dataset": "dataset", "kind": "kind"},
            time_column="gap_start",
            time_end_column="gap_end",
        ),
        Resource(
            name="quality",
            description="Quality of every loaded batch: rows, quarantined rows, quality score, time range",
            relation=_QUALITY,
            key=("batch_no",),
            filters={"exchange": "exchange", "dataset": "dataset", "table": "target_table"},
            time_column="min_ts",
            time_end_column="max_ts",
        ),
        Resource(
            name="runs",
            description="Run history of the services",
            relation=_RUNS,
            key=("started_at", "run_id"),
            filters={"service": "service"},
            time_column="started_at",
        ),
        Resource(
            name="stats",
            description="Market statistics per series: last price, 24 h change, volume, range, returns",
            relation=_STATS,
            key=("exchange", "symbol", "timeframe"),
            filters=dict(_SERIES_FILTERS),
        ),
        Resource(
            name="alerts",
            description="Alerts the threshold rules fired",
            relation="alerts",
            key=("id",),
            filters={"symbol": "symbol", "timeframe": "timeframe", "rule": "rule", "kind": "kind"},
            time_column="triggered_at",
        ),
    )
}
