"""An exchange's own response bodies, parsed offline by ccxt's own code.

A unified ccxt method (`fetchOHLCV`, `fetchTrades`, ...) is a request and a parse: it builds the
request, sends it through `Exchange.fetch`, and turns the body into unified structures. Replaying
a recorded call hands `fetch` the recorded bodies instead of the network, so the parse is exactly
ccxt's, exchange by exchange, and no request is made. That is how silver can be derived again from
exchange-native bronze with a newer ccxt, and how ccxt's own recorded responses prove the parse
path for exchanges the simulator does not speak.

Synchronous on purpose: parsing is CPU work, and the sync ccxt classes need no event loop or
HTTP session (run it in a thread from async code).
"""

from __future__ import annotations

import copy
import functools
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import ccxt

from .keyless import BINANCE_IDS, keyless_historical_trades


class ReplayError(Exception):
    """The recorded call cannot be replayed: an unknown exchange or method, or ccxt asked for more
    responses than were recorded (the call's request sequence differs from the recording)."""


@dataclass(frozen=True)
class RecordedCall:
    """One unified ccxt call as it was made, and every response body it received."""

    exchange_id: str
    method: str
    """The unified method as ccxt names it: "fetchOHLCV", "fetchTrades", "fetchOrderBook", "fetchTicker"."""
    args: Sequence[Any]
    """Its arguments, e.g. ("BTC/USDT", "1m", since, limit, params)."""
    bodies: Sequence[Any]
    """Each HTTP response body the call received, decoded from JSON, in order (handed to ccxt,
    which may change them: decode them for the call)."""
    markets: Mapping[str, Mapping[str, Any]]
    """The ccxt markets (by unified symbol) the call refers to, as ccxt had loaded them."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """ccxt `options` the exchange was built with."""


def replay(call: RecordedCall) -> Any:
    """ccxt's unified result for the recorded bodies (what the call returned when it was made)."""
    offline = _offline_exchange(call.exchange_id, _options_key(call.options))
    with offline.lock:
        exchange = offline.exchange
        # Copies: ccxt keeps and may change what it is given (it edits raw rows in place).
        exchange.set_markets(copy.deepcopy(list(call.markets.values())))
        method = getattr(exchange, call.method, None)
        if method is None or not exchange.has.get(call.method):
            raise ReplayError(f"{call.exchange_id} has no unified method {call.method!r}")
        # Not copied (a 1000-candle body costs more to copy than to parse): ccxt may change the
        # bodies it is given (it edits raw rows in place), so they are the caller's to give up.
        bodies = iter(list(call.bodies))

        def fetch(url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
            try:
                return next(bodies)
            except StopIteration:
                raise ReplayError(
                    f"{call.exchange_id} {call.method} made more requests than the {len(call.bodies)} recorded "
                    f"(the next: {method} {url.split('?')[0]})"
                ) from None

        exchange.fetch = fetch
        return method(*copy.deepcopy(list(call.args)))


@dataclass
class _Offline:
    exchange: ccxt.Exchange
    # One replay at a time per instance: its `fetch` and markets are set for the call.
    lock: threading.Lock = field(default_factory=threading.Lock)


def _options_key(options: Mapping[str, Any]) -> str:
    return json.dumps(options, sort_keys=True, default=str)


@functools.lru_cache(maxsize=64)
def _offline_exchange(exchange_id: str, options_key: str) -> _Offline:
    """A ccxt instance per exchange and options, built once: building one takes milliseconds,
    more than parsing a page."""
    cls = getattr(ccxt, exchange_id, None)
    if exchange_id not in ccxt.exchanges or cls is None:
        raise ReplayError(f"unknown exchange {exchange_id!r}")
    exchange = cls({"enableRateLimit": False, "options": json.loads(options_key)})
    if exchange_id in BINANCE_IDS:
        keyless_historical_trades(exchange)  # replays a trades-by-id page (trades_by_id: decision 0056)
    return _Offline(exchange)
