"""What an exchange's own records carry beyond ccxt's unified ones, read from its bodies.

ccxt's candle is `[ts, open, high, low, close, volume]`. Binance's kline also sends the quote-asset
volume, the number of trades and the taker-buy base and quote volumes; bronze keeps the body, and
these readers take the fields out of it, by the candle's open time. Likewise a trade's maker side
(Binance's `m` / `isBuyerMaker`), by trade id.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

K = TypeVar("K")
V = TypeVar("V")

OHLCV_EXTRAS = ("quote_volume", "trade_count", "taker_buy_base_volume", "taker_buy_quote_volume")

# One candle's extras, in OHLCV_EXTRAS order; None where the exchange sends no such field.
Extras = tuple[float | None, int | None, float | None, float | None]


def _binance_klines(body: Any) -> dict[int, Extras]:
    """`/api/v3/klines` (and the futures klines): rows of twelve fields, 7-10 the extras."""
    found: dict[int, Extras] = {}
    if isinstance(body, list):
        for row in body:
            if isinstance(row, list) and len(row) >= 11 and isinstance(row[0], int):
                found[row[0]] = (_float(row[7]), _int(row[8]), _float(row[9]), _float(row[10]))
    return found


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


_READERS: Mapping[str, Callable[[Any], dict[int, Extras]]] = MappingProxyType(
    dict.fromkeys(("binance", "binanceus", "binanceusdm", "binancecoinm"), _binance_klines)
)


def _binance_trades(body: Any) -> dict[str, str]:
    """`/api/v3/aggTrades` (`a`, `m`) and `/api/v3/trades` (`id`, `isBuyerMaker`): buyer maker → buy."""
    sides: dict[str, str] = {}
    if isinstance(body, list):
        for row in body:
            if not isinstance(row, dict):
                continue
            trade_id = row.get("a", row.get("id"))
            maker = row.get("m", row.get("isBuyerMaker"))
            if trade_id is not None and isinstance(maker, bool):
                sides[str(trade_id)] = "buy" if maker else "sell"
    return sides


_MAKER_SIDE_READERS: Mapping[str, Callable[[Any], dict[str, str]]] = MappingProxyType(
    dict.fromkeys(("binance", "binanceus", "binanceusdm", "binancecoinm"), _binance_trades)
)


def trade_maker_sides(exchange_id: str, bodies: list[Any]) -> dict[str, str]:
    """The maker side (`buy`: the buyer's order was resting) of every trade in `bodies` (decoded
    trades responses) whose exchange states it, by trade id; empty for the others."""
    return _read_all(_MAKER_SIDE_READERS.get(exchange_id), bodies)


def ohlcv_extras(exchange_id: str, bodies: list[Any]) -> dict[int, Extras]:
    """The extras of every candle in `bodies` (decoded kline responses), by open time; empty for
    an exchange whose klines carry none."""
    return _read_all(_READERS.get(exchange_id), bodies)


def _read_all(reader: Callable[[Any], dict[K, V]] | None, bodies: list[Any]) -> dict[K, V]:
    found: dict[K, V] = {}
    if reader is not None:
        for body in bodies:
            found.update(reader(body))
    return found
