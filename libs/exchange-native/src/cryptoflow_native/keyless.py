"""Binance's `historicalTrades` without an API key: ccxt still demands one, Binance no longer does.

Binance dropped the API-key requirement of `GET /api/v3/historicalTrades` (its security type is
NONE), but ccxt's `binance.sign` still raises AuthenticationError without `apiKey`. The trade
archives' REST tail pages by trade id with that endpoint (decision 0056), in the extractor and in
the transformer's replay of its bronze alike, so both wrap `sign` here: without a key the request
is signed as ccxt would sign it with one, minus the key header. With a key, ccxt's own signing is
untouched. Remove once ccxt signs `historicalTrades` without a key.
"""

from __future__ import annotations

from typing import Any

import ccxt

BINANCE_IDS = frozenset({"binance", "binanceus", "binanceusdm", "binancecoinm"})
_PATH = "historicalTrades"
_HEADER = "X-MBX-APIKEY"
_PLACEHOLDER = "keyless"


def keyless_historical_trades(exchange: ccxt.Exchange) -> None:
    """Let `exchange` (a Binance) call `historicalTrades` without an API key."""
    original = exchange.sign

    def sign(path: str, api: Any = "public", method: str = "GET", params: Any = None, *rest: Any) -> Any:
        if path != _PATH or exchange.apiKey:
            return original(path, api, method, {} if params is None else params, *rest)
        exchange.apiKey = _PLACEHOLDER  # sign() is synchronous: nothing else sees the placeholder
        try:
            signed = original(path, api, method, {} if params is None else params, *rest)
        finally:
            exchange.apiKey = ""
        headers = {k: v for k, v in (signed.get("headers") or {}).items() if k != _HEADER}
        return {**signed, "headers": headers or None}

    exchange.sign = sign
