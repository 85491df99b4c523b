"""A stream client keeps a bounded number of trades alive, however many it has handled.

ccxt pro keeps each symbol's newest trades in a cache sized by its `tradesLimit`; the stream job
reads what is new after every update, so the cache needs to span a scheduling gap, not history.
At 100,000 per symbol every trade of a busy stream stayed alive, and the collector's full passes
over them grew into 100-270 ms pauses every ~10 s at 1k trades/s (bench/stream.py's live p99).
"""

from __future__ import annotations

import gc
from typing import Any

import ccxt
import orjson
import pytest
from cryptoflow_extractor.stream_trades import CacheOverflow, check_overflow
from cryptoflow_extractor.ws import CACHE_LIMIT, StreamClient

BINANCE_URL = "wss://stream.binance.com:9443/ws"
HANDLED = 5 * CACHE_LIMIT


class StandIn:
    """ccxt's websocket client as a handler sees it: its URL, and `resolve` keeping the result a
    watcher would get (the stream job reads after every update)."""

    def __init__(self) -> None:
        self.url = BINANCE_URL
        self.futures: dict[str, Any] = {}
        self.subscriptions: dict[str, Any] = {}
        self.rejections: dict[str, Any] = {}
        self.resolved: list[Any] = []

    def resolve(self, result: Any, message_hash: str) -> Any:
        self.resolved.append(result)
        return result


def trade_frame(trade_id: int) -> dict[str, Any]:
    return {"e": "trade", "E": 1_700_000_000_000 + trade_id, "s": "BTCUSDT", "t": trade_id, "p": "42000.10",
            "q": "0.001", "T": 1_700_000_000_000 + trade_id, "m": trade_id % 2 == 0, "M": True}  # fmt: skip


def btc_usdt() -> dict[str, Any]:
    """Binance's BTC/USDT spot market with ccxt's defaults for every field a handler may read."""
    market: dict[str, Any] = ccxt.Exchange().safe_market_structure(
        {"id": "BTCUSDT", "lowercaseId": "btcusdt", "symbol": "BTC/USDT", "base": "BTC", "quote": "USDT",
         "baseId": "BTC", "quoteId": "USDT", "type": "spot", "spot": True, "swap": False, "future": False,
         "option": False, "contract": False, "active": True, "precision": {"amount": 1e-8, "price": 0.01}}
    )  # fmt: skip
    return market


def live_trade_dicts() -> int:
    return sum(1 for o in gc.get_objects() if type(o) is dict and "takerOrMaker" in o and "info" in o)


def test_a_stream_client_keeps_a_bounded_number_of_trades_alive() -> None:
    client = StreamClient("binance", None, {"BTC/USDT": btc_usdt()})
    stand_in = StandIn()
    before = live_trade_dicts()
    for trade_id in range(1, HANDLED + 1):
        client.exchange.handle_message(stand_in, orjson.loads(orjson.dumps(trade_frame(trade_id))))
        stand_in.resolved.clear()
    cache = client.exchange.trades["BTC/USDT"]
    # Every trade went through the handler, and the newest are what the cache holds.
    assert cache[-1]["id"] == str(HANDLED)
    kept = live_trade_dicts() - before
    assert 0 < kept <= CACHE_LIMIT, f"{kept:,} of {HANDLED:,} handled trades are still alive"
    assert len(cache) == kept


def test_a_read_that_fills_the_cache_ends_the_connection_so_rest_fills_it() -> None:
    """A read as long as the cache may have lost its oldest trades: the connection ends (and the
    next one fills from the cursor by REST, as after a drop); a shorter one is taken."""
    trade = {"id": "1", "timestamp": 1, "symbol": "BTC/USDT", "price": 1.0, "amount": 1.0}
    check_overflow([trade] * (CACHE_LIMIT - 1))
    with pytest.raises(CacheOverflow, match="fill ccxt's cache"):
        check_overflow([trade] * CACHE_LIMIT)
