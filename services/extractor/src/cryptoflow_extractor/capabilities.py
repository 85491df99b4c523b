"""What an exchange offers, read from ccxt itself: any ccxt exchange id is a valid exchange.

ccxt describes each exchange class without a request: `has` (which unified methods it
implements: True, "emulated", False or None) and `timeframes` (the candle sizes its kline
endpoint takes). A jobs file is checked against those before anything runs, so an exchange that
lacks a dataset or a timeframe is a configuration error naming both, not a job failing at 3 am.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

import ccxt.async_support as ccxt


@dataclass(frozen=True)
class Capabilities:
    exchange_id: str
    has: Mapping[str, object]
    timeframes: frozenset[str]
    pro_has: Mapping[str, object]

    def streams(self, method: str) -> bool:
        """Whether ccxt pro implements the websocket method `method` ("watchTrades"...)."""
        return bool(self.pro_has.get(method))

    def offers(self, method: str) -> bool:
        """Whether ccxt implements the unified `method` ("fetchOHLCV"...) for this exchange,
        natively or emulated."""
        return bool(self.has.get(method))


def exchange_ids() -> list[str]:
    """Every exchange id ccxt knows (its REST classes)."""
    return list(ccxt.exchanges)


def _unknown_exchange_message(exchange_id: str) -> str:
    close = difflib.get_close_matches(exchange_id, exchange_ids(), n=3)
    hint = f"did you mean {', '.join(close)}?" if close else "e.g. binance, kraken, okx, coinbase"
    return f"unknown exchange {exchange_id!r}: not a ccxt exchange id ({hint})"


@cache
def capabilities(exchange_id: str) -> Capabilities:
    """ccxt's description of one exchange. Raises LookupError for an id ccxt does not know."""
    if exchange_id not in ccxt.exchanges:
        raise LookupError(_unknown_exchange_message(exchange_id))
    # A bare instance: nothing is requested (no session opens before the first request).
    described = getattr(ccxt, exchange_id)()
    return Capabilities(
        exchange_id=exchange_id,
        has=dict(described.has),
        timeframes=frozenset(described.timeframes or ()),
        pro_has=_pro_has(exchange_id),
    )


def _pro_has(exchange_id: str) -> Mapping[str, object]:
    import ccxt.pro  # imported on first need: it adds most of a second to every import of this module

    pro_class = getattr(ccxt.pro, exchange_id, None)
    return dict(pro_class().has) if pro_class is not None else {}
