"""ccxt's unmodified binance, bybit and gate classes pointed at a simulator.

The override is the extractor's rule (`cryptoflow_extractor.exchanges.create_exchange`),
repeated here so these tests stay independent of the extractor's code: every URL string in
`urls['api']` (nested dicts too) gets the simulator's scheme and host and keeps its own path.
The constructor options are the extractor's too. The one other change is test-only:
`timeout_on_exit = 0`, so `close()` skips ccxt's 250 ms courtesy sleep; requests are unaffected.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import ccxt.async_support as ccxt

EXCHANGES = ("binance", "bybit", "gate")
SPOT_ONLY_OPTIONS = {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False}
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CANDLES = FIXTURES / "candles" / "binance"
TRADES = FIXTURES / "trades" / "binance"
RECORDED_RESPONSES = FIXTURES / "exchanges"


def rehost(value: Any, base_url: str) -> Any:
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        parts, base = urlsplit(value), urlsplit(base_url)
        return urlunsplit((base.scheme, base.netloc, parts.path, parts.query, parts.fragment))
    if isinstance(value, dict):
        return {key: rehost(item, base_url) for key, item in value.items()}
    return value


@asynccontextmanager
async def ccxt_client(exchange_id: str, base_url: str, timeout_ms: int = 10_000) -> AsyncIterator[Any]:
    exchange = getattr(ccxt, exchange_id)({"timeout": timeout_ms, "options": SPOT_ONLY_OPTIONS})
    exchange.urls["api"] = rehost(exchange.urls["api"], base_url)
    exchange.timeout_on_exit = 0
    try:
        yield exchange
    finally:
        await exchange.close()


async def http_get(base_url: str, path: str, params: dict[str, str] | None = None) -> tuple[int, Any]:
    """Status and body: parsed JSON, or the text when the body is not JSON (a gateway page)."""
    async with aiohttp.ClientSession() as session, session.get(base_url + path, params=params) as response:
        text = await response.text()
    try:
        return response.status, json.loads(text)
    except json.JSONDecodeError:
        return response.status, text


async def http_send(method: str, base_url: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body)
    async with aiohttp.ClientSession() as session, session.request(method, base_url + path, data=data) as response:
        return response.status, await response.json(content_type=None)


def recorded(exchange_id: str, method: str) -> dict[str, Any]:
    with (RECORDED_RESPONSES / exchange_id / f"{method}.json").open() as handle:
        entry: dict[str, Any] = json.load(handle)
    return entry
