"""What an exchange's websocket frames carry beyond ccxt's unified structures, read from the frames.

ccxt's streamed candle is `[ts, o, h, l, c, v]` whether or not its window has closed, yet the
exchanges say so: Binance's kline `k.x`, Bybit's `kline.*` `confirm`, Gate's `spot.candlesticks`
`w`. A streamed candle's kline extras, as `ohlcv_extras` reads them from REST klines (Binance's
`k.q`, `k.n`, `k.V`, `k.Q`), and Gate's base amount `a` (ccxt's streamed Gate candle takes `v`,
the quote volume, where its REST candle takes the base amount). And a streamed trade's maker side,
as `trade_maker_sides` reads it from REST bodies: the maker side is `buy` when the buyer's order
was the resting one (Binance's `m`); Bybit's and Gate's trade streams state the taker's side
instead, whose opposite is the maker's.

Every reader takes the frames of one subscription (the extractor's stream jobs each have a
connection of their own): they are read by open time or trade id, not by symbol.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, TypeVar

from .extras import Extras

K = TypeVar("K")
V = TypeVar("V")

_BINANCES = ("binance", "binanceus", "binanceusdm", "binancecoinm")
_OPPOSITE = MappingProxyType({"buy": "sell", "sell": "buy"})


def candle_closed_flags(exchange_id: str, frames: Sequence[str]) -> dict[int, bool]:
    """Whether the exchange marked each streamed candle closed, by open time (ms), from its kline
    frames; for a ts in several frames the last wins. A candle whose frames carry no flag (Gate
    may leave `w` out) is absent, as is every candle of an exchange without a reader."""
    return _read(_CLOSED_READERS.get(exchange_id), frames)


def stream_trade_maker_sides(exchange_id: str, frames: Sequence[str]) -> dict[str, str]:
    """The maker side (`buy`: the buyer's order was resting) of every streamed trade whose frame
    states a side, by trade id as ccxt gives it."""
    return _read(_MAKER_SIDE_READERS.get(exchange_id), frames)


def stream_ohlcv_extras(exchange_id: str, frames: Sequence[str]) -> dict[int, Extras]:
    """The kline extras (`OHLCV_EXTRAS` order: quote volume, trade count, taker-buy base and quote
    volume) of every streamed candle whose exchange sends them, by open time (ms), as
    `ohlcv_extras` reads them from REST klines: Binance's kline `k.q`, `k.n`, `k.V`, `k.Q`. For a
    ts in several frames, the last frame's (a candle whose last frame lacks them is absent); empty
    for an exchange whose klines carry none (Bybit's `turnover` is not read from REST either)."""
    return _read_present(_EXTRAS_READERS.get(exchange_id), frames)


def stream_ohlcv_base_volumes(exchange_id: str, frames: Sequence[str]) -> dict[int, float]:
    """The base-currency volume of every streamed candle whose frames state it apart from the
    volume ccxt takes, by open time (ms); the last frame of a ts wins (absent when that frame
    lacks it).

    Gate's `spot.candlesticks` push has `v` ("total volume", in the quote currency) and `a` (the
    base-currency amount). ccxt's websocket parse takes `v` as the candle's volume, while its REST
    parse of `/spot/candlesticks` takes the base amount (column 6): the same candle would carry a
    quote volume when streamed and a base volume when polled. `a` is the volume REST gives."""
    return _read_present(_BASE_VOLUME_READERS.get(exchange_id), frames)


def _binance_closed(message: Any) -> Iterator[tuple[int, bool]]:
    """Kline stream: `{"e": "kline", "k": {"t": open time, "x": closed, ...}}`."""
    kline = _binance_kline(message)
    if kline is not None and isinstance(kline.get("x"), bool):
        yield kline["t"], kline["x"]


def _binance_extras(message: Any) -> Iterator[tuple[int, Extras | None]]:
    """Kline stream: `k.q` quote volume, `k.n` trades, `k.V` / `k.Q` taker-buy base / quote volume."""
    kline = _binance_kline(message)
    if kline is not None:
        extras = (_float(kline.get("q")), _int(kline.get("n")), _float(kline.get("V")), _float(kline.get("Q")))
        yield kline["t"], None if extras == (None, None, None, None) else extras


def _binance_kline(message: Any) -> dict[str, Any] | None:
    data = _binance_event(message)
    kline = data.get("k") if data.get("e") == "kline" else None
    return kline if isinstance(kline, dict) and _is_int(kline.get("t")) else None


def _binance_makers(message: Any) -> Iterator[tuple[str, str]]:
    """Trade stream (`t`) and aggregate trade stream (`a`): `m` is "the buyer is the maker"."""
    data = _binance_event(message)
    trade_id = {"trade": data.get("t"), "aggTrade": data.get("a")}.get(str(data.get("e")))
    maker = data.get("m")
    if trade_id is not None and isinstance(maker, bool):
        yield str(trade_id), "buy" if maker else "sell"


def _binance_event(message: Any) -> dict[str, Any]:
    """The event, unwrapped from a combined stream's `{"stream": ..., "data": {...}}`."""
    if isinstance(message, dict) and "stream" in message and isinstance(message.get("data"), dict):
        message = message["data"]
    return message if isinstance(message, dict) else {}


def _bybit_closed(message: Any) -> Iterator[tuple[int, bool]]:
    """`kline.<interval>.<symbol>` topic: `data[]` of `{"start": open time, "confirm": closed}`."""
    for row in _bybit_rows(message, "kline."):
        if _is_int(row.get("start")) and isinstance(row.get("confirm"), bool):
            yield row["start"], row["confirm"]


def _bybit_makers(message: Any) -> Iterator[tuple[str, str]]:
    """`publicTrade.<symbol>` topic: `data[]` of `{"i": id, "S": taker side "Buy"/"Sell"}`."""
    for row in _bybit_rows(message, "publicTrade."):
        maker = _OPPOSITE.get(str(row.get("S")).lower())
        if row.get("i") is not None and maker is not None:
            yield str(row["i"]), maker


def _bybit_rows(message: Any, topic_prefix: str) -> Iterator[dict[str, Any]]:
    if isinstance(message, dict) and str(message.get("topic", "")).startswith(topic_prefix):
        data = message.get("data")
        yield from (row for row in (data if isinstance(data, list) else [data]) if isinstance(row, dict))


def _gate_closed(message: Any) -> Iterator[tuple[int, bool]]:
    """`<market>.candlesticks` update: `result` `{"t": open time (s, a string), "w": closed}`."""
    for row in _gate_rows(message, "candlesticks"):
        seconds = _int(row.get("t"))
        if seconds is not None and isinstance(row.get("w"), bool):
            yield seconds * 1000, row["w"]


def _gate_base_volumes(message: Any) -> Iterator[tuple[int, float | None]]:
    """`<market>.candlesticks` update: `result` `{"t": open time (s), "a": base amount, ...}`."""
    for row in _gate_rows(message, "candlesticks"):
        seconds = _int(row.get("t"))
        if seconds is not None:
            yield seconds * 1000, _float(row.get("a"))


def _gate_makers(message: Any) -> Iterator[tuple[str, str]]:
    """`spot.trades` update: `result` `{"id": id, "side": taker side}`."""
    for row in _gate_rows(message, "trades"):
        maker = _OPPOSITE.get(str(row.get("side")))
        if row.get("id") is not None and maker is not None:
            yield str(row["id"]), maker


def _gate_rows(message: Any, channel_kind: str) -> Iterator[dict[str, Any]]:
    """The `result` object(s) of an update on a `<market>.<channel_kind>` channel."""
    if not isinstance(message, dict) or message.get("event") != "update":
        return
    if str(message.get("channel", "")).partition(".")[2] != channel_kind:
        return
    result = message.get("result")
    yield from (row for row in (result if isinstance(result, list) else [result]) if isinstance(row, dict))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


_CLOSED_READERS: Mapping[str, Callable[[Any], Iterator[tuple[int, bool]]]] = MappingProxyType(
    {**dict.fromkeys(_BINANCES, _binance_closed), "bybit": _bybit_closed, "gate": _gate_closed}
)
_MAKER_SIDE_READERS: Mapping[str, Callable[[Any], Iterator[tuple[str, str]]]] = MappingProxyType(
    {**dict.fromkeys(_BINANCES, _binance_makers), "bybit": _bybit_makers, "gate": _gate_makers}
)
_EXTRAS_READERS: Mapping[str, Callable[[Any], Iterator[tuple[int, Extras | None]]]] = MappingProxyType(
    dict.fromkeys(_BINANCES, _binance_extras)
)
_BASE_VOLUME_READERS: Mapping[str, Callable[[Any], Iterator[tuple[int, float | None]]]] = MappingProxyType(
    {"gate": _gate_base_volumes}
)


def _read(reader: Callable[[Any], Iterator[tuple[K, V]]] | None, frames: Sequence[str]) -> dict[K, V]:
    found: dict[K, V] = {}
    if reader is None:
        return found
    for frame in frames:
        try:
            message = json.loads(frame)
        except ValueError:
            continue  # not JSON (a text pong): carries nothing
        found.update(reader(message))
    return found


def _read_present(reader: Callable[[Any], Iterator[tuple[K, V | None]]] | None, frames: Sequence[str]) -> dict[K, V]:
    """`_read`, then without the keys whose last frame stated nothing."""
    return {key: value for key, value in _read(reader, frames).items() if value is not None}
