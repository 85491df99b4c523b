"""24h tickers and order books derived from a market's candles and trades.

Both are pure functions of (market, symbol, now), the same for every exchange's wire format,
so a test can compute what any simulated exchange serves:

* the **anchor** is the last closed candle at `now` of the finest interval the market has for
  the symbol (`1m` for a random walk; `1s` is never used);
* the ticker covers the candles opening in the 24 hours that end at the anchor's close:
  open = first open, high/low = extremes, last = anchor close, volume and quote volume = sums,
  prev_close = close of the candle before that window (else the window's open);
  trade counts, first/last trade ids and the last trade come from the market's trades in
  [open_time, close_time];
* the book is centred on `last` with `step = max(0.00000001, last * 0.0001)` (8 decimals):
  bid level i (0-based) = last - (i + 1) * step, ask level i = last + (i + 1) * step, so prices
  are strictly monotonic and bid < last < ask; a bid level that would be <= 0 is left out.
  Level sizes are a deterministic function of (symbol, anchor open time, side, level);
  the ticker's bid/ask sizes are the book's first levels.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from decimal import Decimal

from cryptoflow_exchange_sim.intervals import INTERVALS, Interval
from cryptoflow_exchange_sim.market import Kline, KlineWindow, Market, TradeStats

DAY_MS = 86_400_000
# Finest first; 1s is skipped on purpose (86,400 candles a day would make every ticker slow).
_TICKER_INTERVALS: tuple[Interval, ...] = tuple(
    INTERVALS[name] for name in ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d")
)
_STEP_RATIO = Decimal("0.0001")
EIGHT_PLACES = Decimal("0.00000001")
_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Level:
    price: Decimal
    size: Decimal


@dataclass(frozen=True, slots=True)
class BookSnapshot:
    """Top of a simulated book. `update_id` changes whenever the anchor candle does."""

    update_id: int
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]


@dataclass(frozen=True, slots=True)
class TickerSnapshot:
    """24h statistics; all zeros (and no anchor) when the symbol has no closed candle yet."""

    anchor: Kline | None
    open_time: int
    close_time: int
    open: Decimal = _ZERO
    high: Decimal = _ZERO
    low: Decimal = _ZERO
    last: Decimal = _ZERO
    prev_close: Decimal = _ZERO
    volume: Decimal = _ZERO
    quote_volume: Decimal = _ZERO
    trades: TradeStats = field(default_factory=TradeStats)
    bid: Level = field(default_factory=lambda: Level(_ZERO, _ZERO))
    ask: Level = field(default_factory=lambda: Level(_ZERO, _ZERO))

    @property
    def change(self) -> Decimal:
        return self.last - self.open

    def change_ratio(self) -> Decimal:
        """(last - open) / open, 0 when open is 0."""
        return self.change / self.open if self.open else _ZERO

    def weighted_average(self) -> Decimal:
        return self.quote_volume / self.volume if self.volume and self.quote_volume else _ZERO


def fmt8(value: Decimal) -> str:
    """Positional notation with 8 decimals, the way Binance prints decimal fields."""
    return f"{value.quantize(EIGHT_PLACES):.8f}"


def find_anchor(market: Market, symbol_id: str, now_ms: int) -> tuple[Interval, Kline] | None:
    """The last closed candle at `now_ms`, in the finest interval the market has."""
    for interval in _TICKER_INTERVALS:
        newest = market.klines(symbol_id, interval, KlineWindow(None, now_ms, 2), now_ms)
        closed = [kline for kline in newest if kline.close_time < now_ms]
        if closed:
            return interval, closed[-1]
        if newest:
            # Only a forming candle: an older closed one may still exist before it.
            before = market.klines(symbol_id, interval, KlineWindow(None, newest[0].open_time - 1, 1), now_ms)
            if before:
                return interval, before[-1]
    return None


def ticker_snapshot(market: Market, symbol_id: str, now_ms: int) -> TickerSnapshot:
    found = find_anchor(market, symbol_id, now_ms)
    if found is None:
        return TickerSnapshot(anchor=None, open_time=now_ms - DAY_MS, close_time=now_ms)
    interval, anchor = found
    close_time = anchor.close_time
    open_time = close_time + 1 - DAY_MS
    window = KlineWindow(open_time, anchor.open_time, DAY_MS // interval.length_ms + 1)
    candles = market.klines(symbol_id, interval, window, now_ms)
    previous = market.klines(symbol_id, interval, KlineWindow(None, open_time - 1, 1), now_ms)
    first_open = Decimal(candles[0].open)
    last = Decimal(anchor.close)
    book = order_book(symbol_id, anchor, 1)
    return TickerSnapshot(
        anchor=anchor,
        open_time=open_time,
        close_time=close_time,
        open=first_open,
        high=max(Decimal(kline.high) for kline in candles),
        low=min(Decimal(kline.low) for kline in candles),
        last=last,
        prev_close=Decimal(previous[-1].close) if previous else first_open,
        volume=sum((Decimal(kline.volume) for kline in candles), _ZERO),
        quote_volume=sum((Decimal(kline.quote_volume) for kline in candles), _ZERO),
        trades=market.trade_stats(symbol_id, open_time, close_time, now_ms),
        bid=book.bids[0] if book.bids else Level(_ZERO, _ZERO),
        ask=book.asks[0] if book.asks else Level(_ZERO, _ZERO),
    )


def book_snapshot(market: Market, symbol_id: str, depth: int, now_ms: int) -> BookSnapshot:
    live_book = getattr(market, "live_book", None)
    if live_book is not None:
        # A live market's book moves every tick (live.py); REST serves the same book the
        # websocket deltas build.
        snapshot: BookSnapshot = live_book(symbol_id, depth, now_ms)
        return snapshot
    found = find_anchor(market, symbol_id, now_ms)
    if found is None:
        return BookSnapshot(0, (), ())
    return order_book(symbol_id, found[1], depth)


def order_book(symbol_id: str, anchor: Kline, depth: int) -> BookSnapshot:
    last = Decimal(anchor.close)
    step = max(EIGHT_PLACES, (last * _STEP_RATIO).quantize(EIGHT_PLACES))
    bids = tuple(
        Level(last - (level + 1) * step, _size(symbol_id, anchor.open_time, "bid", level))
        for level in range(depth)
        if last - (level + 1) * step > 0
    )
    asks = tuple(
        Level(last + (level + 1) * step, _size(symbol_id, anchor.open_time, "ask", level)) for level in range(depth)
    )
    return BookSnapshot((anchor.close_time + 1) // 1000, bids, asks)


def _size(symbol_id: str, anchor_open: int, side: str, level: int) -> Decimal:
    key = f"book|{symbol_id}|{anchor_open}|{side}|{level}".encode()
    unit = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") / 2**64
    # 0.001 to ~100, log-uniform: small and large resting orders both appear.
    return Decimal(10 ** (-3 + 5 * unit)).quantize(EIGHT_PLACES)
