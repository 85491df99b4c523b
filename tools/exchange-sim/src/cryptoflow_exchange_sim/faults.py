"""Data faults: serve chosen candles broken while the rest of a market stays intact.

HTTP-level faults (rate limits, 5xx, delays, truncated or altered bodies) live in
`fault_plan.py`; these are faults in the market data itself, the same on every exchange.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal, get_args

from cryptoflow_exchange_sim.intervals import Interval
from cryptoflow_exchange_sim.market import Kline, KlineWindow, Listing, Market, Trade, TradeStats, TradeWindow

MalformationKind = Literal["high_below_low", "negative_price", "negative_volume"]
MALFORMATION_KINDS: tuple[MalformationKind, ...] = get_args(MalformationKind)


@dataclass(frozen=True, slots=True)
class MalformedCandle:
    """The candle of `symbol_id` opening at `open_time_ms`, in every interval that has one."""

    symbol_id: str
    open_time_ms: int
    kind: MalformationKind = "high_below_low"


def parse_malformed_spec(spec: str) -> MalformedCandle:
    """Parse the CLI form `SYMBOL:OPEN_TIME_MS[:KIND]`; SYMBOL may be `BTC/USDT` or `BTCUSDT`."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1].isdigit():
        raise ValueError(f"expected SYMBOL:OPEN_TIME_MS[:KIND], got {spec!r}")
    name = parts[2] if len(parts) == 3 else "high_below_low"
    kind = next((known for known in MALFORMATION_KINDS if known == name), None)
    if kind is None:
        raise ValueError(f"unknown malformation {name!r}; choose from {', '.join(MALFORMATION_KINDS)}")
    return MalformedCandle(parts[0].replace("/", "").upper(), int(parts[1]), kind)


def malform(kline: Kline, kind: MalformationKind) -> Kline:
    """Rewrite one field so the candle is invalid, leaving every other field as it was."""
    if kind == "high_below_low":
        lowest = min(Decimal(kline.open), Decimal(kline.close), Decimal(kline.low))
        # Below the low as well as below open and close, whatever the candle's prices are.
        high = lowest / 2 if lowest > 0 else lowest - 1
        return kline._replace(high=_plain(high))
    if kind == "negative_price":
        return kline._replace(low=_plain(_negative(Decimal(kline.low))))
    return kline._replace(volume=_plain(_negative(Decimal(kline.volume))))


class FaultyMarket:
    """Wraps a market and breaks the listed candles on their way out."""

    def __init__(self, inner: Market, malformed: Iterable[MalformedCandle]) -> None:
        self._inner = inner
        self._kinds = {(fault.symbol_id, fault.open_time_ms): fault.kind for fault in malformed}
        listed = {listing.symbol_id for listing in inner.listings()}
        # A typo in a symbol would otherwise leave the test it serves silently fault-free.
        unlisted = sorted({symbol_id for symbol_id, _ in self._kinds} - listed)
        if unlisted:
            raise ValueError(f"cannot malform candles of unlisted symbols: {', '.join(unlisted)}")

    def listings(self) -> Sequence[Listing]:
        return self._inner.listings()

    def klines(self, symbol_id: str, interval: Interval, window: KlineWindow, now_ms: int) -> list[Kline]:
        served = self._inner.klines(symbol_id, interval, window, now_ms)
        if not self._kinds:
            return served
        return [self._serve(symbol_id, kline) for kline in served]

    def trades(self, symbol_id: str, window: TradeWindow, now_ms: int) -> list[Trade]:
        return self._inner.trades(symbol_id, window, now_ms)

    def trade_stats(self, symbol_id: str, start_ms: int, end_ms: int, now_ms: int) -> TradeStats:
        return self._inner.trade_stats(symbol_id, start_ms, end_ms, now_ms)

    def _serve(self, symbol_id: str, kline: Kline) -> Kline:
        kind = self._kinds.get((symbol_id, kline.open_time))
        return kline if kind is None else malform(kline, kind)


def _negative(value: Decimal) -> Decimal:
    return -value if value > 0 else value - 1


def _plain(value: Decimal) -> str:
    # Positional notation, like every decimal Binance sends.
    return format(value, "f")
