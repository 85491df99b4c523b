"""Seeded synthetic candles for any symbol and every Binance interval.

The log-price is a sum of octaves of value noise: octave k has a knot every 4**k seconds
whose value comes from hashing (seed, symbol, k, knot index), and amplitude 2**k, so the
variance grows linearly with the horizon like a random walk. Because the price is a pure
function of time, any candle can be computed alone: pages, restarts and intervals all
agree, and each candle's close equals the next candle's open.

Trades are derived from each closed 1m candle: exactly `trade_count` of them, the first at the
open price, the last at the close, one at the high and one at the low, the others inside
[low, high]; their quantities add up to the candle's volume exactly. Trade ids are
`minute_index * 100 * trade_scale + k` (minute_index = open_time // 60000, k = 0..trade_count-1),
so they increase with time but are not contiguous. `trade_scale` multiplies every candle's trade
count (streams and benchmarks need more than 5-100 trades a minute).

A trade is public once its candle has closed (the REST polling the pipeline began with); with
`live_trades`, once its own time has passed, as on an exchange that streams trades.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import itertools
import math
import re
from collections import OrderedDict
from collections.abc import Generator, Iterator, Sequence
from decimal import Decimal
from functools import lru_cache

from cryptoflow_exchange_sim.intervals import INTERVALS, Interval
from cryptoflow_exchange_sim.market import Kline, KlineWindow, Listing, Trade, TradeStats, TradeWindow

_UNIFIED_SYMBOL = re.compile(r"^([A-Z0-9]+)/([A-Z0-9]+)$")
_OCTAVES = 14  # the slowest octave spans 4**13 s, about two years
_SIGMA_PER_SECOND_KNOT = 0.0001  # gives ~0.1 % per minute and ~3 % per day
_MINUTE = INTERVALS["1m"]
_MINUTE_MS = _MINUTE.length_ms
TRADE_ID_STRIDE = 100  # trade ids are minute_index * 100 * trade_scale + k: < 100 * trade_scale a minute
_MINUTE_CACHE_SIZE = 512
_EIGHT_PLACES = Decimal("0.00000001")


class RandomWalkMarket:
    """Deterministic candles from `start_ms` until `end_ms` (exclusive) or now.

    The candle containing `start_ms` is the first one served. The candle still forming at
    `now_ms` is served too, with the price reached so far, as Binance does.
    """

    def __init__(
        self,
        symbols: Sequence[str],
        seed: int,
        start_ms: int,
        end_ms: int | None = None,
        trade_scale: int = 1,
        live_trades: bool = False,
    ) -> None:
        if end_ms is not None and end_ms <= start_ms:
            raise ValueError(f"end_ms {end_ms} must be after start_ms {start_ms}")
        if trade_scale < 1:
            raise ValueError(f"trade_scale must be at least 1, got {trade_scale}")
        self.trade_scale = trade_scale
        self.trade_id_stride = TRADE_ID_STRIDE * trade_scale
        self.live_trades = live_trades
        self._minute_cache: OrderedDict[tuple[str, int], list[Trade]] = OrderedDict()
        self._listings = tuple(_listing_from_unified(symbol) for symbol in symbols)
        self._seed = seed
        self._start_ms = start_ms
        self._end_ms = end_ms

    def listings(self) -> Sequence[Listing]:
        return self._listings

    def klines(self, symbol_id: str, interval: Interval, window: KlineWindow, now_ms: int) -> list[Kline]:
        last_instant = now_ms if self._end_ms is None else min(now_ms, self._end_ms - 1)
        if last_instant < self._start_ms:
            return []
        open_times = _select_open_times(
            interval,
            first_open=interval.floor(self._start_ms),
            last_open=interval.floor(last_instant),
            window=window,
        )
        return [self._candle(symbol_id, interval, open_time, now_ms) for open_time in open_times]

    def trades(self, symbol_id: str, window: TradeWindow, now_ms: int) -> list[Trade]:
        lowest, highest = self._trade_minutes(window, now_ms)
        chosen: list[Trade] = []
        if window.newest_first:
            skipped = 0
            for trade in self._trades_backward(symbol_id, lowest, highest):
                if not window.admits(trade) or trade.time_ms > now_ms:
                    continue
                if skipped < window.skip:
                    skipped += 1
                    continue
                chosen.append(trade)
                if len(chosen) >= window.limit:
                    break
            return chosen[::-1]
        last_ms = now_ms if window.end_ms is None else min(now_ms, window.end_ms)
        for trade in self._trades_forward(symbol_id, lowest, highest, window.start_ms, window.from_id):
            if trade.time_ms > last_ms:
                break  # trades come in time order: none later can match
            if window.admits(trade):
                chosen.append(trade)
                if len(chosen) >= window.limit:
                    break
        return chosen

    def trade_stats(self, symbol_id: str, start_ms: int, end_ms: int, now_ms: int) -> TradeStats:
        lowest, highest = self._trade_minutes(TradeWindow(start_ms=start_ms, end_ms=end_ms), now_ms)
        count, first_id, last_id = 0, None, None
        for minute in range(lowest, highest + 1, _MINUTE_MS):
            inside = minute >= start_ms and minute + _MINUTE_MS - 1 <= min(end_ms, now_ms)
            if inside:
                # Only the count is needed: one hash instead of the whole minute of trades.
                ids = [
                    minute // _MINUTE_MS * self.trade_id_stride + k for k in range(self._trade_count(symbol_id, minute))
                ]
            else:
                ids = [
                    t.id
                    for t in self._minute_trades(symbol_id, minute)
                    if start_ms <= t.time_ms <= end_ms and t.time_ms <= now_ms
                ]
            if ids:
                count += len(ids)
                first_id = ids[0] if first_id is None else first_id
                last_id = ids[-1]
        if last_id is None:
            return TradeStats()
        minute = last_id // self.trade_id_stride * _MINUTE_MS
        last = next(t for t in self._minute_trades(symbol_id, minute) if t.id == last_id)
        return TradeStats(count, first_id, last_id, last)

    def _trade_minutes(self, window: TradeWindow, now_ms: int) -> tuple[int, int]:
        """Open times of the first and last closed 1m candles that can hold matching trades."""
        last_instant = now_ms if self._end_ms is None else min(now_ms, self._end_ms - 1)
        highest = _MINUTE.floor(last_instant)
        if highest + _MINUTE_MS > now_ms and not self.live_trades:
            highest -= _MINUTE_MS  # still forming: its trades are not public yet
        lowest = _MINUTE.floor(self._start_ms)
        if window.start_ms is not None:
            lowest = max(lowest, _MINUTE.floor(window.start_ms))
        if window.from_id is not None:
            lowest = max(lowest, window.from_id // self.trade_id_stride * _MINUTE_MS)
        if window.end_ms is not None:
            highest = min(highest, _MINUTE.floor(window.end_ms))
        if window.to_id is not None:
            highest = min(highest, (window.to_id - 1) // self.trade_id_stride * _MINUTE_MS)
        return lowest, highest

    def _trades_forward(
        self, symbol_id: str, lowest: int, highest: int, start_ms: int | None = None, from_id: int | None = None
    ) -> Iterator[Trade]:
        """The minutes' trades in time (and id) order, from the first at or after `start_ms` and
        `from_id`: a stream asks for the last few milliseconds of a minute every 10 ms, and
        scanning the minute from its start each time cost the simulator most of its CPU."""
        for minute in range(lowest, highest + 1, _MINUTE_MS):
            trades = self._minute_trades(symbol_id, minute)
            first = 0
            if start_ms is not None and start_ms > minute:
                first = bisect.bisect_left(trades, start_ms, key=_trade_time)
            if from_id is not None:
                first = max(first, bisect.bisect_left(trades, from_id, key=_trade_id))
            yield from itertools.islice(trades, first, None)

    def _trades_backward(self, symbol_id: str, lowest: int, highest: int) -> Iterator[Trade]:
        for minute in range(highest, lowest - 1, -_MINUTE_MS):
            yield from reversed(self._minute_trades(symbol_id, minute))

    def _trade_count(self, symbol_id: str, minute: int) -> int:
        # The same expression `_candle` evaluates for a closed 1m candle (minutes == 1.0).
        return int(
            1.0 * (5 + 95 * _unit_hash(self._seed, symbol_id, _MINUTE.name, minute, "trades")) * self.trade_scale
        )

    def _minute_trades(self, symbol_id: str, minute: int) -> list[Trade]:
        """A closed minute's trades (computed once: streams ask for the same minute many times)."""
        cached = self._minute_cache.get((symbol_id, minute))
        if cached is None:
            cached = self._keep(symbol_id, minute, _run(self._minute_trade_steps(symbol_id, minute)))
        return cached

    async def prepare_minute(self, symbol_id: str, minute: int, pause_s: float = 0.0) -> None:
        """Make and keep a minute's trades ahead, in steps of TRADE_STEP trades with the event loop
        let through between them: a streaming simulator asks for a minute as it starts, and ten
        busy symbols' minutes made at once (~0.1 s each) held every feed up for a second. `pause_s`
        between steps spreads the work (on a busy machine, a burst of it delays the feeds too)."""
        if (symbol_id, minute) in self._minute_cache:
            return
        steps = self._minute_trade_steps(symbol_id, minute)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                self._keep(symbol_id, minute, done.value)
                return
            await asyncio.sleep(pause_s)

    def _keep(self, symbol_id: str, minute: int, trades: list[Trade]) -> list[Trade]:
        self._minute_cache[(symbol_id, minute)] = trades
        if len(self._minute_cache) > _MINUTE_CACHE_SIZE:
            self._minute_cache.popitem(last=False)
        return trades

    def _minute_trade_steps(self, symbol_id: str, minute: int) -> Generator[None, None, list[Trade]]:
        """A minute's trades, yielding after every TRADE_STEP of them in each pass."""
        candle = self._candle(symbol_id, _MINUTE, minute, minute + _MINUTE_MS)
        count = candle.trade_count
        if count == 0:
            return []

        def unit(*label: object) -> float:
            return _unit_hash(self._seed, symbol_id, "trade", minute, *label)

        low, high = Decimal(candle.low), Decimal(candle.high)
        prices: list[Decimal] = []
        for ks in _steps(count):
            prices += [(low + (high - low) * Decimal(unit(k, "price"))).quantize(_EIGHT_PLACES) for k in ks]
            yield
        prices[0] = Decimal(candle.open)
        if count >= 2:
            prices[-1] = Decimal(candle.close)
        if count >= 4:
            at_high = 1 + int(unit("high-at") * (count - 2))
            at_low = 1 + int(unit("low-at") * (count - 3))
            at_low += 1 if at_low >= at_high else 0
            prices[at_high], prices[at_low] = high, low
        volume = Decimal(candle.volume)
        weights: list[float] = []
        for ks in _steps(count):
            weights += [0.5 + unit(k, "qty") for k in ks]
            yield
        total = sum(weights)
        quantities: list[Decimal] = []
        for ks in _steps(count - 1):
            quantities += [(volume * Decimal(weights[k] / total)).quantize(_EIGHT_PLACES) for k in ks]
            yield
        quantities.append(volume - sum(quantities, Decimal(0)))
        slot = _MINUTE_MS // count
        first_id = minute // _MINUTE_MS * self.trade_id_stride
        trades: list[Trade] = []
        for ks in _steps(count):
            trades += [
                Trade(
                    id=first_id + k,
                    price=_plain8(prices[k]),
                    qty=_plain8(quantities[k]),
                    quote_qty=_plain8((prices[k] * quantities[k]).quantize(_EIGHT_PLACES)),
                    time_ms=minute + k * slot + int(unit(k, "time") * slot),
                    is_buyer_maker=unit(k, "side") < 0.5,
                )
                for k in ks
            ]
            yield
        return trades

    def _candle(self, symbol_id: str, interval: Interval, open_time: int, now_ms: int) -> Kline:
        scheduled_end = interval.shift(open_time, 1)
        price_until = min(scheduled_end, now_ms)
        # A forming candle has covered only part of its interval; wicks and volume scale with it.
        progress = (price_until - open_time) / (scheduled_end - open_time)
        open_price = self._price(symbol_id, open_time)
        close_price = self._price(symbol_id, price_until)

        def unit(label: str) -> float:
            return _unit_hash(self._seed, symbol_id, interval.name, open_time, label)

        swing = _SIGMA_PER_SECOND_KNOT * math.sqrt(interval.length_ms / 1000) * progress
        high = max(open_price, close_price) * math.exp(swing * unit("high"))
        low = min(open_price, close_price) * math.exp(-swing * unit("low"))
        minutes = interval.length_ms / 60_000 * progress
        volume = self._typical_volume_per_minute(symbol_id) * minutes * (0.2 + 1.6 * unit("volume"))
        taker_share = 0.3 + 0.4 * unit("taker")
        mean_price = (open_price + high + low + close_price) / 4
        return Kline(
            open_time=open_time,
            open=_decimal(open_price),
            high=_decimal(high),
            low=_decimal(low),
            close=_decimal(close_price),
            volume=_decimal(volume),
            close_time=scheduled_end - 1,
            quote_volume=_decimal(volume * mean_price),
            trade_count=int(minutes * (5 + 95 * unit("trades")) * self.trade_scale),
            taker_buy_base_volume=_decimal(volume * taker_share),
            taker_buy_quote_volume=_decimal(volume * taker_share * mean_price),
        )

    def _price(self, symbol_id: str, ts_ms: int) -> float:
        base_price = 10 ** (-2 + 6 * _unit_hash(self._seed, symbol_id, "base-price"))
        seconds = ts_ms / 1000
        log_offset = 0.0
        for octave in range(_OCTAVES):
            position = seconds / 4**octave
            index = math.floor(position)
            fraction = position - index
            left = _knot(self._seed, symbol_id, octave, index)
            right = _knot(self._seed, symbol_id, octave, index + 1)
            log_offset += _SIGMA_PER_SECOND_KNOT * 2**octave * (left + (right - left) * fraction)
        return base_price * math.exp(log_offset)

    def _typical_volume_per_minute(self, symbol_id: str) -> float:
        return 10 ** (-1 + 4 * _unit_hash(self._seed, symbol_id, "volume-scale"))


def _select_open_times(interval: Interval, first_open: int, last_open: int, window: KlineWindow) -> list[int]:
    upper = last_open if window.end_ms is None else min(last_open, interval.floor(window.end_ms))
    if window.start_ms is not None:
        cursor = max(first_open, interval.ceil(window.start_ms))
        forward: list[int] = []
        while cursor <= upper and len(forward) < window.limit:
            forward.append(cursor)
            cursor = interval.shift(cursor, 1)
        return forward
    cursor = upper
    backward: list[int] = []
    while cursor >= first_open and len(backward) < window.limit:
        backward.append(cursor)
        cursor = interval.shift(cursor, -1)
    return backward[::-1]


def _listing_from_unified(symbol: str) -> Listing:
    match = _UNIFIED_SYMBOL.match(symbol)
    if match is None:
        raise ValueError(f"expected a unified spot symbol like 'BTC/USDT', got {symbol!r}")
    base, quote = match.groups()
    return Listing(symbol_id=base + quote, base_asset=base, quote_asset=quote)


def _decimal(value: float) -> str:
    # Binance prints every decimal field with 8 places.
    return f"{value:.8f}"


def _plain8(value: Decimal) -> str:
    return f"{value:.8f}"


@lru_cache(maxsize=1 << 16)
def _knot(seed: int, symbol_id: str, octave: int, index: int) -> float:
    return 2 * _unit_hash(seed, symbol_id, "knot", octave, index) - 1


def _unit_hash(seed: int, symbol_id: str, *parts: object) -> float:
    """A uniform number in [0, 1) fixed by its inputs; stable across processes, unlike hash()."""
    key = "|".join(str(part) for part in (seed, symbol_id, *parts)).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") / 2**64


def _trade_time(trade: Trade) -> int:
    return trade.time_ms


def _trade_id(trade: Trade) -> int:
    return trade.id


# Trades made per step of RandomWalkMarket.prepare_minute (a few milliseconds of work).
TRADE_STEP = 500


def _steps(count: int) -> Iterator[range]:
    return (range(start, min(start + TRADE_STEP, count)) for start in range(0, count, TRADE_STEP))


def _run(steps: Generator[None, None, list[Trade]]) -> list[Trade]:
    while True:
        try:
            next(steps)
        except StopIteration as done:
            trades: list[Trade] = done.value
            return trades
