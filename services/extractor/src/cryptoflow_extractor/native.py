"""What the exchange sent: every HTTP response of a unified ccxt call, as received.

`capture_responses` wraps an exchange's `fetch` (ccxt's one door to the network) so that, inside
`unified_call`, each response is recorded with its request (path, query without credentials,
status, the headers that matter, the body as text). The call's `NativeCall` is what bronze keeps,
and what `cryptoflow_native.replay` parses again offline.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import ccxt.async_support as ccxt
from cryptoflow_contracts import NativeCall, NativeResponse
from cryptoflow_native import json_safe

# ccxt's unified names (what bronze records and replay calls) and the Python methods behind them.
METHODS: Mapping[str, str] = {
    "fetchOHLCV": "fetch_ohlcv",
    "fetchTrades": "fetch_trades",
    "fetchOrderBook": "fetch_order_book",
    "fetchTicker": "fetch_ticker",
}

# Headers worth keeping: rate-limit weights and counters, the server's clock, the body's type.
_KEPT_HEADERS = ("ratelimit", "rate-limit", "weight", "retry-after")
_KEPT_EXACT = frozenset({"date", "content-type"})
# Query parameters that carry credentials on private endpoints: never written down.
_SECRET_PARAMS = ("key", "sign", "secret", "token", "passphrase", "password", "nonce")

_responses: contextvars.ContextVar[list[NativeResponse] | None] = contextvars.ContextVar(
    "native_responses", default=None
)


@dataclass(frozen=True)
class UnifiedCall:
    """A unified ccxt method and its arguments."""

    method: str
    args: tuple[Any, ...]


def capture_responses(exchange: ccxt.Exchange) -> None:
    """Record each response `exchange` reads inside `unified_call` (outside it: nothing)."""
    original: Callable[..., Awaitable[Any]] = exchange.fetch

    async def fetch(url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
        result = await original(url, method, headers, body)
        # Read before anything else runs: ccxt keeps the latest response per instance.
        sink = _responses.get()
        if sink is not None:
            sink.append(native_response(exchange, url, method))
        return result

    exchange.fetch = fetch


def native_response(exchange: ccxt.Exchange, url: str, method: str) -> NativeResponse:
    parts = urlsplit(url)
    params = {k: v for k, v in parse_qsl(parts.query, keep_blank_values=True) if not _secret(k)}
    headers = {
        name.lower(): str(value)
        for name, value in (exchange.last_response_headers or {}).items()
        if name.lower() in _KEPT_EXACT or any(part in name.lower() for part in _KEPT_HEADERS)
    }
    return NativeResponse(
        method=method,
        path=parts.path,
        params=params,
        status=getattr(exchange, "last_http_status", None),
        headers=headers,
        body=exchange.last_http_response or "",
    )


def _secret(name: str) -> bool:
    lowered = name.lower()
    return any(part in lowered for part in _SECRET_PARAMS)


async def unified_call(
    exchange: ccxt.Exchange, call: UnifiedCall, symbol: str, options: Mapping[str, Any]
) -> tuple[Any, NativeCall]:
    """Run `call` on `exchange`: ccxt's result, and what the exchange sent for it."""
    sink: list[NativeResponse] = []
    token = _responses.set(sink)
    try:
        result = await getattr(exchange, METHODS[call.method])(*call.args)
    finally:
        _responses.reset(token)
    market = (exchange.markets or {}).get(symbol)
    native = NativeCall(
        ccxt_version=ccxt.__version__,
        method=call.method,
        args=json_safe(list(call.args)),
        market=json_safe(market) if market is not None else None,
        options=json_safe(dict(options)),
        responses=sink,
    )
    return result, native
