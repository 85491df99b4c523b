"""Binance spot REST wire format: request validation, response bodies and error bodies.

Pure functions only; `server.py` wires them to HTTP. Error codes and messages are the ones
Binance returns, because clients such as ccxt map `code` to their exception types.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from cryptoflow_exchange_sim.intervals import INTERVALS, Interval
from cryptoflow_exchange_sim.market import DEFAULT_KLINE_LIMIT, MAX_KLINE_LIMIT, Kline, KlineWindow, Listing

JsonObject = dict[str, object]
WireKline = list[int | str]
QueryPairs = Sequence[tuple[str, str]]

_SYMBOL_PATTERN = re.compile(r"^[A-Z0-9\-_.]{1,20}$")
_UNSIGNED_PATTERN = re.compile(r"^[0-9]{1,20}$")
_UTC_OFFSET = re.compile(r"^[+-]?0{1,2}(:00)?$")
# Binance accepts timestamps in microseconds too; 1e15 ms lies far beyond any real date.
_MICROSECOND_THRESHOLD = 10**15

_KLINES_PARAMS = frozenset({"symbol", "interval", "startTime", "endTime", "limit", "timeZone"})
_EXCHANGE_INFO_PARAMS = frozenset({"symbol", "symbols"})

_RATE_LIMITS: list[JsonObject] = [
    {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
    {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
    {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
    {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
]
_ORDER_TYPES = [
    "LIMIT",
    "LIMIT_MAKER",
    "MARKET",
    "STOP_LOSS",
    "STOP_LOSS_LIMIT",
    "TAKE_PROFIT",
    "TAKE_PROFIT_LIMIT",
]
_SMALLEST_STEP = "0.00000001"


class BinanceError(Exception):
    """A request Binance would refuse; rendered as `{"code": ..., "msg": ...}`."""

    def __init__(self, code: int, msg: str, http_status: int = 400) -> None:
        super().__init__(f"{code} {msg}")
        self.code = code
        self.msg = msg
        self.http_status = http_status

    def body(self) -> JsonObject:
        return {"code": self.code, "msg": self.msg}


def invalid_symbol() -> BinanceError:
    return BinanceError(-1121, "Invalid symbol.")


@dataclass(frozen=True, slots=True)
class KlinesRequest:
    symbol_id: str
    interval: Interval
    window: KlineWindow


def parse_klines_request(params: QueryPairs) -> KlinesRequest:
    """Validate `/api/v3/klines` parameters in the order Binance reports their errors."""
    query = _single_valued(params, _KLINES_PARAMS)
    symbol_id = _symbol(query, "symbol")
    interval_name = _mandatory(query, "interval")
    interval = INTERVALS.get(interval_name)
    if interval is None:
        raise BinanceError(-1120, "Invalid interval.")
    start_ms = _timestamp(query, "startTime")
    end_ms = _timestamp(query, "endTime")
    if start_ms is not None and end_ms is not None and start_ms > end_ms:
        raise BinanceError(-1023, "Start time is greater than end time.")
    time_zone = query.get("timeZone")
    if time_zone is not None and not _UTC_OFFSET.match(time_zone):
        # Candles are only laid out on the UTC calendar here; shifting them is not simulated.
        raise BinanceError(-1130, "Data sent for parameter 'timeZone' is not valid.")
    limit = _unsigned(query, "limit")
    if limit is not None and limit < 1:
        raise BinanceError(-1130, "Data sent for parameter 'limit' is not valid.")
    # Binance silently serves at most 1000 rows rather than rejecting a larger limit.
    window_limit = DEFAULT_KLINE_LIMIT if limit is None else min(limit, MAX_KLINE_LIMIT)
    return KlinesRequest(symbol_id, interval, KlineWindow(start_ms, end_ms, window_limit))


def klines_body(klines: Sequence[Kline]) -> list[WireKline]:
    return [list(kline) for kline in klines]


def select_exchange_info_listings(params: QueryPairs, listings: Sequence[Listing]) -> list[Listing]:
    """Apply exchangeInfo's optional `symbol` / `symbols=["A","B"]` filters."""
    query = _single_valued(params, _EXCHANGE_INFO_PARAMS)
    if "symbol" in query and "symbols" in query:
        raise BinanceError(-1128, "Combination of optional parameters invalid.")
    wanted: list[str]
    if "symbol" in query:
        wanted = [_symbol(query, "symbol")]
    elif "symbols" in query:
        wanted = _symbol_list(query["symbols"])
    else:
        return list(listings)
    by_id = {listing.symbol_id: listing for listing in listings}
    if any(symbol_id not in by_id for symbol_id in wanted):
        raise invalid_symbol()
    return [by_id[symbol_id] for symbol_id in wanted]


def exchange_info_body(listings: Sequence[Listing], server_time_ms: int) -> JsonObject:
    return {
        "timezone": "UTC",
        "serverTime": server_time_ms,
        "rateLimits": _RATE_LIMITS,
        "exchangeFilters": [],
        "symbols": [_symbol_info(listing) for listing in listings],
    }


def server_time_body(now_ms: int) -> JsonObject:
    return {"serverTime": now_ms}


def _symbol_info(listing: Listing) -> JsonObject:
    return {
        "symbol": listing.symbol_id,
        "status": "TRADING",
        "baseAsset": listing.base_asset,
        "baseAssetPrecision": 8,
        "quoteAsset": listing.quote_asset,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": _ORDER_TYPES,
        "icebergAllowed": True,
        "ocoAllowed": True,
        "otoAllowed": True,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": True,
        "cancelReplaceAllowed": True,
        "amendAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": _SMALLEST_STEP,
                "maxPrice": "1000000.00000000",
                "tickSize": _SMALLEST_STEP,
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": _SMALLEST_STEP,
                "maxQty": "9000000.00000000",
                "stepSize": _SMALLEST_STEP,
            },
            {"filterType": "ICEBERG_PARTS", "limit": 10},
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": "0.00000000",
                "maxQty": "100000.00000000",
                "stepSize": "0.00000000",
            },
            {
                "filterType": "NOTIONAL",
                "minNotional": _SMALLEST_STEP,
                "applyMinToMarket": True,
                "maxNotional": "9000000.00000000",
                "applyMaxToMarket": False,
                "avgPriceMins": 5,
            },
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
        ],
        "permissions": ["SPOT"],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


def _single_valued(params: QueryPairs, allowed: frozenset[str]) -> dict[str, str]:
    query: dict[str, str] = {}
    for name, value in params:
        if name in query:
            raise BinanceError(-1101, "Duplicate values for a parameter detected.")
        query[name] = value
    read = sum(1 for name in query if name in allowed)
    if read != len(query):
        raise BinanceError(
            -1104,
            f"Not all sent parameters were read; read '{read}' parameter(s) but was sent '{len(query)}'.",
        )
    return query


def _mandatory(query: dict[str, str], name: str) -> str:
    value = query.get(name, "")
    if not value:
        raise BinanceError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
    return value


def _symbol(query: dict[str, str], name: str) -> str:
    value = _mandatory(query, name)
    if not _SYMBOL_PATTERN.match(value):
        raise BinanceError(
            -1100, f"Illegal characters found in parameter '{name}'; legal range is '^[A-Z0-9-_.]{{1,20}}$'."
        )
    return value


def _symbol_list(raw: str) -> list[str]:
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, list) or not parsed or not all(isinstance(item, str) for item in parsed):
        raise BinanceError(-1100, "Illegal characters found in parameter 'symbols'; legal range is '[\"A\",\"B\"]'.")
    return [_symbol({"symbols": item}, "symbols") for item in parsed]


def _unsigned(query: dict[str, str], name: str) -> int | None:
    value = query.get(name)
    if value is None:
        return None
    if not _UNSIGNED_PATTERN.match(value):
        raise BinanceError(-1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.")
    return int(value)


def _timestamp(query: dict[str, str], name: str) -> int | None:
    value = _unsigned(query, name)
    if value is not None and value >= _MICROSECOND_THRESHOLD:
        return value // 1000
    return value
