"""Silver tables: the columns of every silver Parquet batch, shared by transformer and loader.

Types are named here without a Polars or SQL dependency; each side maps them once
(`transformer` to Polars dtypes, `warehouse-loader` to PostgreSQL types). A silver file carries
its `SILVER_SCHEMA_VERSION` in the Parquet metadata key `cryptoflow.schema_version`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class ColumnType(StrEnum):
    TEXT = "text"
    INT = "int64"
    FLOAT = "float64"
    BOOL = "bool"
    TIMESTAMP = "timestamp_ms_utc"


@dataclass(frozen=True)
class SilverTable:
    name: str
    columns: tuple[tuple[str, ColumnType], ...]
    key: tuple[str, ...]
    # The value a reader fills in when a file written before a column existed lacks it. A column
    # added later must come with a default here (and a SILVER_SCHEMA_VERSION bump), or old files
    # of the table can no longer be read.
    defaults: Mapping[str, bool | int | float | str | None] = field(default_factory=dict)
    # Value columns a row must have (besides the key and lineage, always required): NOT NULL in
    # the warehouse.
    not_null: frozenset[str] = frozenset()

    @property
    def column_names(self) -> list[str]:
        return [name for name, _ in self.columns]


# 2: ohlcv's native kline fields (quote_volume, trade_count, taker_buy_*). 3: trades' maker_side.
# 4: order_books' sequence and resynced.
SILVER_SCHEMA_VERSION = 4
SCHEMA_VERSION_METADATA_KEY = "cryptoflow.schema_version"
TABLE_METADATA_KEY = "cryptoflow.table"  # the silver table a Parquet file's rows belong to

T, N, F, B, TS = ColumnType.TEXT, ColumnType.INT, ColumnType.FLOAT, ColumnType.BOOL, ColumnType.TIMESTAMP

OHLCV = SilverTable(
    "ohlcv",
    (
        ("exchange", T), ("symbol", T), ("timeframe", T), ("ts", TS),
        ("open", F), ("high", F), ("low", F), ("close", F), ("volume", F),
        # What the exchange's own kline carries beyond ccxt's six fields (Binance's: quote-asset
        # volume, number of trades, taker-buy base and quote volume); null where it does not.
        ("quote_volume", F), ("trade_count", N), ("taker_buy_base_volume", F), ("taker_buy_quote_volume", F),
        # resampled: built from a finer timeframe; final: the candle's interval is complete.
        ("resampled", B), ("final", B),
        ("source_event_id", T),
    ),
    key=("exchange", "symbol", "timeframe", "ts"),
    defaults={
        "resampled": False,
        "final": True,
        "quote_volume": None,
        "trade_count": None,
        "taker_buy_base_volume": None,
        "taker_buy_quote_volume": None,
    },
    not_null=frozenset({"open", "high", "low", "close", "volume", "resampled", "final"}),
)  # fmt: skip
INDICATORS = SilverTable(
    "indicators",
    (
        ("exchange", T), ("symbol", T), ("timeframe", T), ("ts", TS),
        ("rsi_14", F), ("macd", F), ("macd_signal", F), ("macd_hist", F),
        ("bb_mid", F), ("bb_upper", F), ("bb_lower", F), ("vwap", F),
        ("source_event_id", T),
    ),
    key=("exchange", "symbol", "timeframe", "ts"),
)  # fmt: skip
TICKERS = SilverTable(
    "tickers",
    (
        ("exchange", T), ("symbol", T), ("ts", TS),
        ("bid", F), ("ask", F), ("last", F), ("high", F), ("low", F),
        ("base_volume", F), ("quote_volume", F),
        ("source_event_id", T),
    ),
    key=("exchange", "symbol", "ts"),
)  # fmt: skip
ORDER_BOOKS = SilverTable(
    "order_books",
    (
        ("exchange", T), ("symbol", T), ("ts", TS), ("side", T), ("level", N),
        ("price", F), ("amount", F),
        # The book's, on every level of it: sequence, the exchange's update id the book is at
        # (ccxt's nonce: Binance's lastUpdateId / `u`, Gate's id / `u`; a streamed Bybit book's
        # `u`), null where there is none (a polled Bybit book); resynced, true for the first book
        # a stream published after syncing the book again (a sequence gap, a crossed book, a
        # reconnect).
        ("sequence", N), ("resynced", B),
        ("source_event_id", T),
    ),
    key=("exchange", "symbol", "ts", "side", "level"),
    defaults={"sequence": None, "resynced": False},
    not_null=frozenset({"price", "amount", "resynced"}),
)  # fmt: skip
TRADES = SilverTable(
    "trades",
    (
        ("exchange", T), ("symbol", T), ("trade_id", T), ("ts", TS),
        # side: the taker's (ccxt's); maker_side: the resting order's, as the exchange states it
        # (Binance's isBuyerMaker: buy when the buyer was the maker), null where it does not.
        ("price", F), ("amount", F), ("side", T), ("maker_side", T),
        ("source_event_id", T),
    ),
    key=("exchange", "symbol", "trade_id"),
    defaults={"maker_side": None},
    not_null=frozenset({"price", "amount"}),
)  # fmt: skip
MARKET_SNAPSHOTS = SilverTable(
    "market_snapshots",
    (
        # An aggregator's row: its series is provider·asset (exchange: the provider, coingecko or
        # coinpaprika; symbol: the provider's asset id, bitcoin or btc-bitcoin). The warehouse's
        # view names them source and asset_id; asset_symbol (the coin's ticker, BTC) is its symbol.
        ("exchange", T), ("symbol", T), ("ts", TS),
        ("asset_symbol", T), ("name", T),
        ("price_usd", F), ("market_cap_usd", F), ("volume_24h_usd", F),
        ("circulating_supply", F), ("total_supply", F), ("max_supply", F),
        ("rank", N), ("pct_change_24h", F),
        ("source_event_id", T),
    ),
    key=("exchange", "symbol", "ts"),
    not_null=frozenset({"asset_symbol", "price_usd"}),
)  # fmt: skip
AGGREGATOR_PRICES = SilverTable(
    "aggregator_prices",
    (
        # An aggregator's price history of a coin: series provider·coin id, as market_snapshots'.
        ("exchange", T), ("symbol", T), ("ts", TS),
        ("price_usd", F), ("market_cap_usd", F), ("volume_24h_usd", F),
        ("source_event_id", T),
    ),
    key=("exchange", "symbol", "ts"),
    not_null=frozenset({"price_usd"}),
)  # fmt: skip
AGG_TRADES = SilverTable(
    "agg_trades",
    (
        # Binance's aggregate trade: the fills of one taker order at one price and time, trades
        # first_trade_id..last_trade_id (ids of the `trades` table's rows). Sides as trades'.
        ("exchange", T), ("symbol", T), ("agg_id", T), ("ts", TS),
        ("price", F), ("amount", F), ("first_trade_id", T), ("last_trade_id", T),
        ("side", T), ("maker_side", T),
        ("source_event_id", T),
    ),
    key=("exchange", "symbol", "agg_id"),
    defaults={"maker_side": None},
    not_null=frozenset({"price", "amount"}),
)  # fmt: skip
AGGREGATOR_CANDLES = SilverTable(
    "aggregator_candles",
    (
        # An aggregator's candles of a coin in USD: series provider·coin id·timeframe (exchange,
        # symbol as aggregator_prices'), ts the candle's open time. Only closed candles are kept.
        # volume (in USD) and market_cap: null where the provider gives none (CoinGecko's ohlc).
        ("exchange", T), ("symbol", T), ("timeframe", T), ("ts", TS),
        ("open", F), ("high", F), ("low", F), ("close", F), ("volume", F), ("market_cap", F),
        ("source_event_id", T),
    ),
    key=("exchange", "symbol", "timeframe", "ts"),
    not_null=frozenset({"open", "high", "low", "close"}),
)  # fmt: skip

# The registry of silver tables: a new dataset's table is added with `register_table`.
TABLES: dict[str, SilverTable] = {
    table.name: table
    for table in (
        OHLCV, TICKERS, ORDER_BOOKS, TRADES, INDICATORS, MARKET_SNAPSHOTS, AGGREGATOR_PRICES, AGG_TRADES,
        AGGREGATOR_CANDLES,
    )
}  # fmt: skip


def register_table(table: SilverTable) -> SilverTable:
    """Add a silver table to the registry (its warehouse table comes with its migration)."""
    existing = TABLES.get(table.name)
    if existing is not None and existing != table:
        raise ValueError(f"silver table {table.name!r} is already registered with other columns")
    TABLES[table.name] = table
    return table
