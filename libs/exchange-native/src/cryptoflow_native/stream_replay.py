"""An exchange's own websocket frames, turned into unified structures offline by ccxt pro's handlers.

A ccxt pro `watch*` method subscribes, and every frame the socket receives goes through the
exchange's `handle_message`, which parses it and resolves the watchers' futures. Bronze keeps the
frames as received; replaying them hands each one, decoded as ccxt's client decodes it, to
`handle_message` with a stand-in client that records instead of resolving. The parse is exactly
ccxt's, so silver can be derived again from the frames with a newer ccxt, as `replay` does for
REST bodies.

No socket, session or event loop: the handlers are plain synchronous code (constructing a ccxt pro
instance needs no loop either). Synchronous, like `replay`; run it in a thread from async code.
"""

from __future__ import annotations

import copy
import functools
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .replay import ReplayError

METHODS = ("watchTrades", "watchTicker", "watchOHLCV")

# Caches a handler creates take their size from these options. Each frame starts from empty caches
# (see `_replay_frames`), so only a single frame's items must fit, but a frame can carry many.
_CACHE_LIMIT = 1 << 31


class StreamReplayError(ReplayError):
    """The recorded stream cannot be replayed: an unknown exchange or method, or ccxt's handler
    failed on one of its frames."""


@dataclass(frozen=True)
class RecordedStream:
    """One ccxt pro subscription as it was made, and every websocket text frame it received."""

    exchange_id: str
    """ccxt's id ("binance", "bybit", "gate")."""
    method: str
    """The unified method: "watchTrades", "watchTicker" or "watchOHLCV"."""
    args: Sequence[Any]
    """Its arguments, e.g. ("BTC/USDT",) or ("BTC/USDT", "1m")."""
    frames: Sequence[str]
    """The text frames exactly as received, in order (acks and pongs included: they are skipped)."""
    url: str
    """The websocket URL the frames came from. Handlers read it (`client.url`) to tell spot from
    contract markets sharing an id: Binance counts a URL containing "/stream" as spot, Bybit one
    containing "spot"."""
    markets: Mapping[str, Mapping[str, Any]]
    """The ccxt markets (by unified symbol) the subscription refers to, as ccxt had loaded them."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """ccxt `options` the exchange was built with."""


def replay_stream(stream: RecordedStream) -> list[Any]:
    """ccxt's unified results for the frames, in arrival order, for the subscribed symbol:

    * watchTrades: every trade, once (dicts as ccxt's `parse_ws_trade`/`parse_trade` give them);
    * watchTicker: one ticker per frame that updated the symbol's ticker;
    * watchOHLCV: every candle update `[ts, o, h, l, c, v]` of the subscribed timeframe, an
      unclosed candle's updates included (a later update of the same ts comes later).

    Frames that carry no data (subscription acks, pongs, error replies) give nothing.
    """
    if stream.method not in METHODS:
        raise StreamReplayError(f"cannot replay {stream.method!r} (only {', '.join(METHODS)})")
    if not stream.args or not isinstance(stream.args[0], str):
        raise StreamReplayError(f"{stream.method} needs the symbol as its first argument, got {stream.args!r}")
    offline = _offline_exchange(stream.exchange_id, json.dumps(stream.options, sort_keys=True, default=str))
    with offline.lock:
        exchange = offline.exchange
        if not exchange.has.get(stream.method):
            raise StreamReplayError(f"{stream.exchange_id} has no unified method {stream.method!r}")
        # ccxt keeps and changes the market dicts it is given: hand it copies.
        exchange.set_markets(copy.deepcopy(list(stream.markets.values())))
        return _replay_frames(exchange, stream)


def _replay_frames(exchange: Any, stream: RecordedStream) -> list[Any]:
    symbol: str = stream.args[0]
    timeframe = stream.args[1] if len(stream.args) > 1 and stream.args[1] is not None else "1m"
    client = _ReplayClient(stream.url)
    # Tickers stay across frames (Bybit merges a "delta" frame into the previous ticker); the
    # record says which symbols a frame set.
    tickers = _AssignmentRecord()
    exchange.tickers = tickers
    results: list[Any] = []
    for index, frame in enumerate(stream.frames):
        # Trades and candles are read from fresh caches per frame: a cache then holds exactly the
        # frame's items, and none can be evicted by a size limit or merged into an earlier candle
        # of the same ts (ccxt's candle cache updates that candle in place).
        exchange.trades = {}
        exchange.ohlcvs = {}
        tickers.assigned.clear()
        try:
            exchange.handle_message(client, _decode(frame))
        except Exception as error:
            raise StreamReplayError(
                f"{stream.exchange_id} {stream.method}: frame {index} does not parse: {error!r}"
            ) from error
        if stream.method == "watchTrades":
            results.extend(exchange.trades.get(symbol, ()))
        elif stream.method == "watchOHLCV":
            results.extend(list(candle) for candle in exchange.ohlcvs.get(symbol, {}).get(timeframe, ()))
        elif symbol in tickers.assigned:
            results.append(dict(tickers[symbol]))
    return results


def _decode(frame: str | bytes) -> Any:
    """As ccxt's client decodes a text frame: JSON when it looks like an object or array, the text
    itself otherwise (some exchanges' pongs)."""
    if isinstance(frame, bytes):
        frame = frame.decode()
    if len(frame) >= 2 and frame[0] in "{[":
        return json.loads(frame)
    return frame


class _AssignmentRecord(dict[str, Any]):
    """ccxt's `exchange.tickers`, noting each symbol a handler stores a ticker under."""

    def __init__(self) -> None:
        super().__init__()
        self.assigned: set[str] = set()

    def __setitem__(self, key: str, value: Any) -> None:
        self.assigned.add(key)
        super().__setitem__(key, value)


class _ReplayClient:
    """What the handlers touch of ccxt's websocket `Client`. Resolving and rejecting settle no
    future (no watcher waits): results are read from the exchange's caches instead."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.subscriptions: dict[str, Any] = {}
        self.futures: dict[str, Any] = {}
        self.rejections: dict[str, Any] = {}
        self.lastPong: int | None = None  # ccxt's name: Bybit's pong handler sets it
        self.verbose = False

    def resolve(self, result: Any, message_hash: Any = None) -> Any:
        return result

    def reject(self, result: Any, message_hash: Any = None) -> Any:
        # An error reply (a refused subscription) is not data; the live watcher would have raised.
        return result

    def reset(self, error: Any) -> None:
        """Binance resets the connection on a 5xx error reply; there is none to reset."""


@dataclass
class _Offline:
    exchange: Any
    # One replay at a time per instance: its markets and caches are set for the stream.
    lock: threading.Lock = field(default_factory=threading.Lock)


@functools.lru_cache(maxsize=64)
def _offline_exchange(exchange_id: str, options_key: str) -> _Offline:
    """A ccxt pro instance per exchange and options, built once (building one costs more than
    parsing a few frames). Never connected, so it holds no session to close."""
    import ccxt.pro  # here, not at the top: it costs half a second, paid only by stream replays

    cls = getattr(ccxt.pro, exchange_id, None)
    if exchange_id not in ccxt.pro.exchanges or cls is None:
        raise StreamReplayError(f"unknown ccxt pro exchange {exchange_id!r}")
    options = {**json.loads(options_key), "tradesLimit": _CACHE_LIMIT, "OHLCVLimit": _CACHE_LIMIT}
    return _Offline(cls({"enableRateLimit": False, "options": options}))
