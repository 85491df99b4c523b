"""What ccxt's unified result lacks for some exchanges, completed from the exchange's own fields.

Applied to every unified result, live (the extractor) and replayed (the transformer parsing
bronze), so both see the same records.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

# The field of an exchange's own trade (ccxt's `info`) that identifies it, where ccxt gives the
# trade no `id` (KuCoin's public trades carry a `sequence`): without an id, trades of one
# millisecond cannot be told apart across pages.
TRADE_ID_FIELDS: Mapping[str, str] = MappingProxyType({"kucoin": "sequence"})


def complete(exchange_id: str, method: str, result: Any) -> Any:
    """`result` of the unified `method`, completed where ccxt leaves a gap (a new list when it
    changes anything; anything malformed is returned as it is, for validation to refuse)."""
    if method == "fetchTrades":
        return with_trade_ids(exchange_id, result)
    return result


def with_trade_ids(exchange_id: str, trades: Any) -> Any:
    field_name = TRADE_ID_FIELDS.get(exchange_id)
    if field_name is None or not isinstance(trades, list):
        return trades
    return [_with_id(trade, field_name) for trade in trades]


def _with_id(trade: Any, field_name: str) -> Any:
    if not isinstance(trade, dict) or trade.get("id") is not None:
        return trade
    info = trade.get("info")
    own = info.get(field_name) if isinstance(info, dict) else None
    return trade if own is None else {**trade, "id": str(own)}
