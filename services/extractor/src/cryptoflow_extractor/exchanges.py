"""ccxt exchange construction; the simulator is reached by overriding URLs only."""

from __future__ import annotations

import copy
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import ccxt.async_support as ccxt
from cryptoflow_native.keyless import BINANCE_IDS, keyless_historical_trades

from .native import capture_responses
from .profiles import profile


def _rehost(url: str, base_url: str) -> str:
    """Keep the exchange's own path, swap scheme and host: the wire format stays the exchange's."""
    parts = urlsplit(url)
    base = urlsplit(base_url)
    return urlunsplit((base.scheme, base.netloc, parts.path, parts.query, parts.fragment))


def _rehost_tree(value: Any, base_url: str) -> Any:
    if isinstance(value, str):
        return _rehost(value, base_url) if value.startswith(("http://", "https://")) else value
    if isinstance(value, dict):
        return {key: _rehost_tree(item, base_url) for key, item in value.items()}
    return value


def create_exchange(
    exchange_id: str, base_url: str | None, timeout_ms: int = 10_000, rate_limit_ms: float | None = None
) -> ccxt.Exchange:
    facts = profile(exchange_id)
    cls = getattr(ccxt, facts.ccxt_id)
    config: dict[str, Any] = {
        # Our own limiter (limiter.py) spaces requests and honours Retry-After for all jobs.
        "enableRateLimit": False,
        # The raw body, parsed, for drift checks and dead letters (ccxt keeps none by default).
        "enableLastJsonResponse": True,
        "timeout": timeout_ms,
        # A copy: ccxt keeps (and may change) what it is given; the profile is shared.
        "options": {key: copy.deepcopy(value) for key, value in facts.load_options.items()},
    }
    if rate_limit_ms is not None:
        config["rateLimit"] = rate_limit_ms
    exchange: ccxt.Exchange = cls(config)
    if base_url is not None:
        exchange.urls["api"] = _rehost_tree(exchange.urls["api"], base_url)
    if facts.ccxt_id in BINANCE_IDS:
        keyless_historical_trades(exchange)  # the trade archives' REST tail (trades_by_id.py)
    record_http_status(exchange)
    capture_responses(exchange)
    return exchange


def record_http_status(exchange: ccxt.Exchange) -> None:
    """Keep each response's HTTP status on the instance (`last_http_status`).

    ccxt maps an exchange's own error body on a 5xx to ExchangeError, which looks permanent;
    the status tells us the exchange was failing, so the request is worth retrying.
    """
    original = exchange.on_rest_response

    def on_rest_response(code: Any, *args: Any) -> Any:
        exchange.last_http_status = int(code) if code is not None else None
        return original(code, *args)

    exchange.last_http_status = None
    exchange.on_rest_response = on_rest_response
