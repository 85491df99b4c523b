"""Order books that move between candles: the state behind the websocket depth streams.

Without it a simulated book changes once per anchor candle (derived.py). A live market splits
time into ticks of `tick_ms` (100 ms by default, Binance's `@depth@100ms`) and gives every tick a
few level changes, so depth streams have deltas to send and sequence rules something to check.

The book at tick k is a pure function of (market, symbol, k), the same for REST and websocket:

* its base is `derived.order_book` of the anchor candle at `k * tick_ms` (the last closed
  candle), `BOOK_LEVELS` levels a side on the anchor's price grid;
* every later tick j of the same anchor changes `CHANGES_PER_TICK` levels of that grid, chosen
  and sized by hashing (symbol, j, n); about one change in six removes its level (size 0);
* update ids: tick k owns ids `(k - 1) * IDS_PER_TICK + 1 ..= k * IDS_PER_TICK`; the book at
  tick k has update id `k * IDS_PER_TICK` (Binance's and Gate's `lastUpdateId`); a delta up to
  tick k carries `U`/`u` = the first id after the previous book's and k's last, so consecutive
  deltas are contiguous.

Prices stay on the anchor's grid (bids below its close, asks above), so a live book can never
cross. A delta (streams.py) is the difference between two books: at an anchor change it removes
the old grid's levels and sets the new one's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache

from cryptoflow_exchange_sim.derived import BookSnapshot, Level, find_anchor, order_book
from cryptoflow_exchange_sim.intervals import Interval
from cryptoflow_exchange_sim.market import Kline, KlineWindow, Listing, Market, Trade, TradeStats, TradeWindow

DEFAULT_TICK_MS = 100
BOOK_LEVELS = 100
CHANGES_PER_TICK = 3
IDS_PER_TICK = 4
_ZERO = Decimal(0)
_EIGHT = Decimal("0.00000001")

Side = dict[Decimal, Decimal]


@dataclass(frozen=True, slots=True)
class BookState:
    """A whole live book at one tick: price → size on each side, and its update id."""

    tick: int
    update_id: int
    bids: Side
    asks: Side

    def top(self, depth: int) -> BookSnapshot:
        bids = sorted(self.bids.items(), reverse=True)[:depth]
        asks = sorted(self.asks.items())[:depth]
        return BookSnapshot(
            self.update_id,
            tuple(Level(price, size) for price, size in bids),
            tuple(Level(price, size) for price, size in asks),
        )


class LiveMarket:
    """A market whose order books move every tick; candles and trades are the wrapped market's.

    Implements `Market`, so the REST side serves the live book as well (`derived.book_snapshot`
    asks `live_book`), and REST snapshots and websocket deltas agree by construction.
    """

    def __init__(self, market: Market, tick_ms: int = DEFAULT_TICK_MS) -> None:
        if tick_ms <= 0 or 60_000 % tick_ms:
            raise ValueError(f"tick_ms must divide a minute, got {tick_ms}")
        self.inner = market
        self.tick_ms = tick_ms
        self.snapshot_lag: Callable[[], int] | None = None

    # --- Market -------------------------------------------------------------------------------

    def listings(self) -> Sequence[Listing]:
        return self.inner.listings()

    def klines(self, symbol_id: str, interval: Interval, window: KlineWindow, now_ms: int) -> list[Kline]:
        return self.inner.klines(symbol_id, interval, window, now_ms)

    def trades(self, symbol_id: str, window: TradeWindow, now_ms: int) -> list[Trade]:
        return self.inner.trades(symbol_id, window, now_ms)

    async def prepare_minute(self, symbol_id: str, minute: int, pause_s: float = 0.0) -> None:
        prepare = getattr(self.inner, "prepare_minute", None)
        if prepare is not None:
            await prepare(symbol_id, minute, pause_s)

    def trade_stats(self, symbol_id: str, start_ms: int, end_ms: int, now_ms: int) -> TradeStats:
        return self.inner.trade_stats(symbol_id, start_ms, end_ms, now_ms)

    # --- live books ---------------------------------------------------------------------------

    def tick_at(self, now_ms: int) -> int:
        return now_ms // self.tick_ms

    def tick_of_update_id(self, update_id: int) -> int:
        """The tick whose ids include `update_id`."""
        return (update_id + IDS_PER_TICK - 1) // IDS_PER_TICK

    def live_book(self, symbol_id: str, depth: int, now_ms: int) -> BookSnapshot:
        """What a REST depth request at `now_ms` gets; a `stale_snapshot` fault serves an older
        tick's book (the snapshot a client fetches lags the deltas it buffered)."""
        lag = self.snapshot_lag() if self.snapshot_lag is not None else 0
        return self.book_at(symbol_id, self.tick_at(now_ms) - lag).top(depth)

    def book_at(self, symbol_id: str, tick: int) -> BookState:
        """The whole book after tick `tick`'s changes."""
        found = find_anchor(self.inner, symbol_id, tick * self.tick_ms)
        if found is None:
            return BookState(tick, tick * IDS_PER_TICK, {}, {})
        anchor = found[1]
        bids, asks = _base_sides(symbol_id, anchor)
        first = self._first_tick(anchor)
        grid = _grid(anchor)
        for each in range(first + 1, tick + 1):
            _apply_changes(symbol_id, each, grid, bids, asks)
        return BookState(tick, tick * IDS_PER_TICK, bids, asks)

    def advance(self, symbol_id: str, before: BookState, tick: int) -> BookState:
        """The book at `tick` (a later tick than `before`'s): cheap when both share an anchor,
        the streams' usual step of one tick."""
        found = find_anchor(self.inner, symbol_id, tick * self.tick_ms)
        if found is None:
            return BookState(tick, tick * IDS_PER_TICK, {}, {})
        anchor = found[1]
        first = self._first_tick(anchor)
        if before.tick < first or before.tick > tick:
            return self.book_at(symbol_id, tick)
        bids, asks = dict(before.bids), dict(before.asks)
        grid = _grid(anchor)
        for each in range(before.tick + 1, tick + 1):
            _apply_changes(symbol_id, each, grid, bids, asks)
        return BookState(tick, tick * IDS_PER_TICK, bids, asks)

    def _first_tick(self, anchor: Kline) -> int:
        """The first tick whose anchor is `anchor`: the one at or after its close."""
        return -(-(anchor.close_time + 1) // self.tick_ms)


@dataclass(frozen=True, slots=True)
class _Grid:
    last: Decimal
    step: Decimal


def _grid(anchor: Kline) -> _Grid:
    last = Decimal(anchor.close)
    return _Grid(last, max(_EIGHT, (last * Decimal("0.0001")).quantize(_EIGHT)))


@lru_cache(maxsize=4096)
def _base(symbol_id: str, anchor: Kline) -> tuple[tuple[Level, ...], tuple[Level, ...]]:
    book = order_book(symbol_id, anchor, BOOK_LEVELS)
    return book.bids, book.asks


def _base_sides(symbol_id: str, anchor: Kline) -> tuple[Side, Side]:
    bids, asks = _base(symbol_id, anchor)
    return {level.price: level.size for level in bids}, {level.price: level.size for level in asks}


def _apply_changes(symbol_id: str, tick: int, grid: _Grid, bids: Side, asks: Side) -> None:
    for n in range(CHANGES_PER_TICK):
        side_unit, level_unit, size_unit = _units(symbol_id, tick, n)
        # Squared: most changes land near the top of the book, as on a real one.
        level = int(level_unit * level_unit * BOOK_LEVELS)
        if side_unit < 0.5:
            price = grid.last - (level + 1) * grid.step
            if price <= 0:
                continue
            side = bids
        else:
            price = grid.last + (level + 1) * grid.step
            side = asks
        if size_unit < 1 / 6:
            side.pop(price, None)
        else:
            side[price] = Decimal(10 ** (-3 + 5 * size_unit)).quantize(_EIGHT)


def _units(symbol_id: str, tick: int, n: int) -> tuple[float, float, float]:
    digest = hashlib.blake2b(f"live|{symbol_id}|{tick}|{n}".encode(), digest_size=24).digest()
    return tuple(int.from_bytes(digest[i : i + 8], "big") / 2**64 for i in (0, 8, 16))  # type: ignore[return-value]
