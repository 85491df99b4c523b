"""Test-side access to a simulator: ccxt's unmodified binance class, plus raw HTTP."""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import ccxt.async_support as ccxt

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "candles" / "binance"
SPOT_ONLY_OPTIONS = {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False}

Candle = list[float]


@asynccontextmanager
async def binance_client(base_url: str, keep_paths: bool = True) -> AsyncIterator[ccxt.binance]:
    """A ccxt binance whose only change is `urls['api']`: every entry points at the simulator.

    With `keep_paths`, each entry keeps Binance's own path (`public` -> base + `/api/v3`);
    without, every entry is the bare base URL and ccxt requests `/exchangeInfo`, `/klines`.
    """
    exchange = ccxt.binance({"options": SPOT_ONLY_OPTIONS})
    exchange.urls["api"] = {
        key: base_url + (urlsplit(url).path if keep_paths else "") for key, url in exchange.urls["api"].items()
    }
    exchange.timeout_on_exit = 0  # test-only: skip ccxt's 250 ms sleep in close()
    try:
        yield exchange
    finally:
        await exchange.close()


async def fetch_all_ohlcv(
    exchange: ccxt.binance, symbol: str, timeframe: str, since: int, page_limit: int
) -> list[Candle]:
    """Page forward the way an extractor does: next `since` is one past the last candle seen."""
    candles: list[Candle] = []
    while True:
        page: list[Candle] = await exchange.fetch_ohlcv(symbol, timeframe, since=since, limit=page_limit)
        if not page:
            return candles
        candles.extend(page)
        since = int(page[-1][0]) + 1


def read_fixture_rows(name: str) -> list[list[str]]:
    with (FIXTURES / name).open(newline="") as handle:
        return list(csv.reader(handle))


def as_ccxt_candles(rows: list[list[str]]) -> list[Candle]:
    """What ccxt should return for recorded rows: open time as int, the five values as floats."""
    return [[int(row[0]), *(float(value) for value in row[1:6])] for row in rows]


async def get_json(base_url: str, path: str, params: dict[str, str] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(base_url + path, params=params) as response:
        return response.status, await response.json(content_type=None)
