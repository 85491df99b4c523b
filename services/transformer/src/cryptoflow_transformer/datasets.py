"""Which module checks which dataset, and the silver table it fills: adding a dataset is adding a line."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cryptoflow_contracts import Dataset
from cryptoflow_contracts.silver import (
    AGG_TRADES,
    AGGREGATOR_CANDLES,
    AGGREGATOR_PRICES,
    MARKET_SNAPSHOTS,
    OHLCV,
    ORDER_BOOKS,
    TICKERS,
    TRADES,
    SilverTable,
)

from .agg_trades import check_agg_trades
from .aggregator_candles import check_aggregator_candles
from .aggregator_prices import check_aggregator_prices
from .market_snapshots import check_market_snapshots
from .ohlcv import check_ohlcv
from .order_books import check_order_books
from .quality import CheckedRows
from .tickers import check_tickers
from .trades import check_trades


@dataclass(frozen=True)
class DatasetTransform:
    table: SilverTable
    check: Callable[[bytes], CheckedRows]  # bronze NDJSON → checked rows


TRANSFORMS: dict[Dataset, DatasetTransform] = {
    Dataset.OHLCV: DatasetTransform(OHLCV, check_ohlcv),
    Dataset.TICKER: DatasetTransform(TICKERS, check_tickers),
    Dataset.ORDERBOOK: DatasetTransform(ORDER_BOOKS, check_order_books),
    Dataset.TRADES: DatasetTransform(TRADES, check_trades),
    Dataset.MARKET_SNAPSHOT: DatasetTransform(MARKET_SNAPSHOTS, check_market_snapshots),
    Dataset.AGGREGATOR_PRICE: DatasetTransform(AGGREGATOR_PRICES, check_aggregator_prices),
    Dataset.AGG_TRADES: DatasetTransform(AGG_TRADES, check_agg_trades),
    Dataset.AGGREGATOR_CANDLE: DatasetTransform(AGGREGATOR_CANDLES, check_aggregator_candles),
}
