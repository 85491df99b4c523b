"""What a simulated market is: its listed symbols, the klines and the trades it can serve.

Exchange-neutral: the wire modules (`binance.py`, `bybit.py`, `gate.py`) translate these
records into each exchange's own format, and `derived.py` computes tickers and order books
from them.
"""

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


class Trade(NamedTuple):
    """One public trade. Decimal fields stay strings, like `Kline`'s; `is_buyer_maker` true
    means the taker sold."""

    id: int
    price: str
    qty: str
    quote_qty: str
    time_ms: int
    is_buyer_maker: bool


@dataclass(frozen=True, slots=True)
class Listing:
    """A spot symbol as Binance and Bybit name it (`BTCUSDT`) plus its two assets."""

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


@dataclass(frozen=True, slots=True)
class TradeWindow:
    """A selection of trades: `from_id <= id < to_id` and `start_ms <= time <= end_ms`, each
    bound optional. Of the matching trades, the oldest `limit`; or, with `newest_first`, the
    newest `limit` once the newest `skip` are passed over. Results are always oldest first."""

    from_id: int | None = None
    to_id: int | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    limit: int = 500
    newest_first: bool = False
    skip: int = 0

    def admits(self, trade: Trade) -> bool:
        return (
            (self.from_id is None or trade.id >= self.from_id)
            and (self.to_id is None or trade.id < self.to_id)
            and (self.start_ms is None or trade.time_ms >= self.start_ms)
            and (self.end_ms is None or trade.time_ms <= self.end_ms)
        )


@dataclass(frozen=True, slots=True)
class TradeStats:
    """Trades between two instants: how many, the first and last ids, and the last trade."""

    count: int = 0
    first_id: int | None = None
    last_id: int | None = None
    last: Trade | None = None


class Market(Protocol):
    """A source of listings, candles and trades. Implementations are synchronous and pure
    given their inputs, so the HTTP layer stays the only place that knows about time and I/O.
    A trade is public once `time_ms <= now_ms` (recorded) or once its candle closed (random walk)."""

    def listings(self) -> Sequence[Listing]: ...

    def klines(self, symbol_id: str, interval: Interval, window: KlineWindow, now_ms: int) -> list[Kline]:
        """Candles of a listed symbol; an interval the market lacks yields an empty list."""
        ...

    def trades(self, symbol_id: str, window: TradeWindow, now_ms: int) -> list[Trade]:
        """Public trades of a listed symbol, oldest first; a symbol without trades yields []."""
        ...

    def trade_stats(self, symbol_id: str, start_ms: int, end_ms: int, now_ms: int) -> TradeStats:
        """Summary of the public trades with `start_ms <= time <= end_ms`."""
        ...
