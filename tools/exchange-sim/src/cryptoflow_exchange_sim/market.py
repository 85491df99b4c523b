"""What a simulated market is: its listed symbols and the klines it can serve."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from cryptoflow_exchange_sim.intervals import Interval

DEFAULT_KLINE_LIMIT = 500
MAX_KLINE_LIMIT = 1000


class Kline(NamedTuple):
    """One row of Binance's `/api/v3/klines` array. Decimal fields stay strings so that
    recorded values travel byte-for-byte to the client, exactly like Binance sends them."""

    open_time: int
    open: str
    high: str
    low: str
    close: str
    volume: str
    close_time: int
    quote_volume: str
    trade_count: int
    taker_buy_base_volume: str
    taker_buy_quote_volume: str
    ignore: str = "0"


@dataclass(frozen=True, slots=True)
class Listing:
    """A spot symbol as Binance names it (`BTCUSDT`) plus its two assets."""

    symbol_id: str
    base_asset: str
    quote_asset: str


@dataclass(frozen=True, slots=True)
class KlineWindow:
    """Binance's kline selection: with `start_ms`, the oldest `limit` candles opening at or
    after it; without, the newest `limit` candles; `end_ms` caps open times either way."""

    start_ms: int | None
    end_ms: int | None
    limit: int = DEFAULT_KLINE_LIMIT


class Market(Protocol):
    """A source of listings and candles. Implementations are synchronous and pure given
    their inputs, so the HTTP layer stays the only place that knows about time and I/O."""

    def listings(self) -> Sequence[Listing]: ...

    def klines(self, symbol_id: str, interval: Interval, window: KlineWindow, now_ms: int) -> list[Kline]:
        """Candles of a listed symbol; an interval the market lacks yields an empty list."""
        ...
