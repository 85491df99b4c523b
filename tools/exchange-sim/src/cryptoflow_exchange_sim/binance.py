"""Binance spot REST wire format (`/api/v3`): request validation, response bodies and error bodies.

Pure functions only; `server.py` wires them to HTTP. Error codes and messages are the ones
Binance returns, because clients such as ccxt map `code` to their exception types.

Endpoints: ping, time, exchangeInfo, klines, depth, ticker/24hr, trades, historicalTrades,
aggTrades. Page sizes: klines 1..1000 (default 500), trades / historicalTrades / aggTrades
1..1000 (default 500), depth 1..5000 (default 100); larger limits are cut to the maximum,
as Binance does. aggTrades: a start/end window may span at most one hour (-1127); with only
`startTime` the window is [startTime, startTime + 1h], with only `endTime` [endTime - 1h,
endTime]. Aggregate trades group consecutive trades with the same time, price and side; an
aggregate's id `a` is the id of its first trade.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

import orjson

from cryptoflow_exchange_sim.derived import TickerSnapshot, book_snapshot, fmt8, ticker_snapshot
from cryptoflow_exchange_sim.intervals import INTERVALS, Interval
from cryptoflow_exchange_sim.market import (
    DEFAULT_KLINE_LIMIT,
    MAX_KLINE_LIMIT,
    Kline,
    KlineWindow,
    Listing,
    Market,
    Trade,
    TradeWindow,
)
from cryptoflow_exchange_sim.wire import JsonObject, QueryPairs, Reply, Route, Venue, WireError, retry_after_header

WireKline = list[int | str]

_SYMBOL_PATTERN = re.compile(r"^[A-Z0-9\-_.]{1,20}$")
_UNSIGNED_PATTERN = re.compile(r"^[0-9]{1,20}$")
_UTC_OFFSET = re.compile(r"^[+-]?0{1,2}(:00)?$")
# Binance accepts timestamps in microseconds too; 1e15 ms lies far beyond any real date.
_MICROSECOND_THRESHOLD = 10**15

_KLINES_PARAMS = frozenset({"symbol", "interval", "startTime", "endTime", "limit", "timeZone"})
_EXCHANGE_INFO_PARAMS = frozenset({"symbol", "symbols"})
_DEPTH_PARAMS = frozenset({"symbol", "limit"})
_TICKER_PARAMS = frozenset({"symbol", "symbols", "type"})
_TRADES_PARAMS = frozenset({"symbol", "limit"})
_HISTORICAL_TRADES_PARAMS = frozenset({"symbol", "limit", "fromId"})
_AGG_TRADES_PARAMS = frozenset({"symbol", "fromId", "startTime", "endTime", "limit"})
DEFAULT_DEPTH_LIMIT = 100
MAX_DEPTH_LIMIT = 5000
DEFAULT_TRADES_LIMIT = 500
MAX_TRADES_LIMIT = 1000
AGG_TRADES_MAX_SPAN_MS = 3_600_000
KLINE_FIELDS = (
    "open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume", "trade_count",
    "taker_buy_base_volume", "taker_buy_quote_volume", "ignore",
)  # fmt: skip

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


class BinanceError(WireError):
    """A request Binance would refuse; rendered as `{"code": ..., "msg": ...}`."""

    def __init__(self, code: int, msg: str, http_status: int = 400) -> None:
        super().__init__(f"{code} {msg}")
        self.code = code
        self.msg = msg
        self.http_status = http_status

    def body(self) -> JsonObject:
        return {"code": self.code, "msg": self.msg}

    def reply(self) -> Reply:
        return Reply(self.body(), self.http_status)


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
    # Binance silently serves at most 1000 rows rather than rejecting a larger limit.
    window_limit = _limit(query, DEFAULT_KLINE_LIMIT, MAX_KLINE_LIMIT)
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


@dataclass(frozen=True, slots=True)
class AggTradesRequest:
    symbol_id: str
    from_id: int | None
    start_ms: int | None
    end_ms: int | None
    limit: int


def parse_agg_trades_request(params: QueryPairs) -> AggTradesRequest:
    query = _single_valued(params, _AGG_TRADES_PARAMS)
    symbol_id = _symbol(query, "symbol")
    from_id = _unsigned(query, "fromId")
    start_ms = _timestamp(query, "startTime")
    end_ms = _timestamp(query, "endTime")
    if start_ms is not None and end_ms is not None:
        if start_ms > end_ms:
            raise BinanceError(-1023, "Start time is greater than end time.")
        if end_ms - start_ms > AGG_TRADES_MAX_SPAN_MS:
            raise BinanceError(-1127, "More than 1 hours between startTime and endTime.")
    elif start_ms is not None:
        end_ms = start_ms + AGG_TRADES_MAX_SPAN_MS
    elif end_ms is not None:
        start_ms = end_ms - AGG_TRADES_MAX_SPAN_MS
    return AggTradesRequest(symbol_id, from_id, start_ms, end_ms, _limit(query, DEFAULT_TRADES_LIMIT, MAX_TRADES_LIMIT))


def aggregate(trades: Sequence[Trade]) -> list[list[Trade]]:
    """Consecutive trades with the same time, price and side, grouped."""
    groups: list[list[Trade]] = []
    for trade in trades:
        if groups and _same_aggregate(groups[-1][-1], trade):
            groups[-1].append(trade)
        else:
            groups.append([trade])
    return groups


def select_agg_trades(market: Market, request: AggTradesRequest, now_ms: int) -> list[list[Trade]]:
    """Whole aggregates only: raw trades are read in growing chunks until the page's last (or,
    for the newest page, first) aggregate is known to be complete."""
    symbol_id, limit = request.symbol_id, request.limit
    chunk = max(2 * limit, 64)
    if request.from_id is None and request.start_ms is None:
        while True:
            raw = market.trades(symbol_id, TradeWindow(limit=chunk, newest_first=True), now_ms)
            groups = aggregate(raw)
            exhausted = len(raw) < chunk
            if not exhausted:
                groups = groups[1:]  # may continue before the chunk
            if exhausted or len(groups) >= limit:
                return groups[-limit:]
            chunk *= 4

    def read(from_id: int | None) -> list[Trade]:
        window = TradeWindow(from_id=from_id, start_ms=request.start_ms, end_ms=request.end_ms, limit=chunk)
        return market.trades(symbol_id, window, now_ms)

    raw = read(request.from_id)
    exhausted = len(raw) < chunk
    last_read = raw[-1].id if raw else None
    if request.from_id is not None and raw:
        before = market.trades(symbol_id, TradeWindow(to_id=raw[0].id, limit=1, newest_first=True), now_ms)
        # An aggregate that began before fromId is not one "from" it: skip its remainder.
        skip = 0
        while before and skip < len(raw) and _same_aggregate(before[0], raw[skip]):
            skip += 1
        raw = raw[skip:]
    groups = aggregate(raw)
    while not exhausted and last_read is not None and len(groups) <= limit:
        more = read(last_read + 1)
        exhausted = len(more) < chunk
        last_read = more[-1].id if more else last_read
        raw.extend(more)
        groups = aggregate(raw)
    return groups[:limit]


def agg_trades_body(groups: Sequence[Sequence[Trade]]) -> list[JsonObject]:
    return [
        {
            "a": group[0].id,
            "p": group[0].price,
            "q": group[0].qty if len(group) == 1 else format(sum((Decimal(t.qty) for t in group), Decimal(0)), "f"),
            "f": group[0].id,
            "l": group[-1].id,
            "T": group[0].time_ms,
            "m": group[0].is_buyer_maker,
            "M": True,
        }
        for group in groups
    ]


def trades_body(trades: Sequence[Trade]) -> list[JsonObject]:
    return [
        {
            "id": trade.id,
            "price": trade.price,
            "qty": trade.qty,
            "quoteQty": trade.quote_qty,
            "time": trade.time_ms,
            "isBuyerMaker": trade.is_buyer_maker,
            "isBestMatch": True,
        }
        for trade in trades
    ]


def ticker_body(symbol_id: str, ticker: TickerSnapshot, mini: bool = False) -> JsonObject:
    stats = ticker.trades
    full: JsonObject = {
        "symbol": symbol_id,
        "priceChange": fmt8(ticker.change),
        "priceChangePercent": f"{ticker.change_ratio() * 100:.3f}",
        "weightedAvgPrice": fmt8(ticker.weighted_average()),
        "prevClosePrice": fmt8(ticker.prev_close),
        "lastPrice": fmt8(ticker.last),
        "lastQty": stats.last.qty if stats.last is not None else fmt8(Decimal(0)),
        "bidPrice": fmt8(ticker.bid.price),
        "bidQty": fmt8(ticker.bid.size),
        "askPrice": fmt8(ticker.ask.price),
        "askQty": fmt8(ticker.ask.size),
        "openPrice": fmt8(ticker.open),
        "highPrice": fmt8(ticker.high),
        "lowPrice": fmt8(ticker.low),
        "volume": fmt8(ticker.volume),
        "quoteVolume": fmt8(ticker.quote_volume),
        "openTime": ticker.open_time,
        "closeTime": ticker.close_time,
        "firstId": -1 if stats.first_id is None else stats.first_id,
        "lastId": -1 if stats.last_id is None else stats.last_id,
        "count": stats.count,
    }
    if not mini:
        return full
    mini_keys = ("symbol", "openPrice", "highPrice", "lowPrice", "lastPrice", "volume", "quoteVolume",
                 "openTime", "closeTime", "firstId", "lastId", "count")  # fmt: skip
    return {key: full[key] for key in mini_keys}


def depth_limit(params: QueryPairs) -> int:
    return _limit(_single_valued(params, _DEPTH_PARAMS), DEFAULT_DEPTH_LIMIT, MAX_DEPTH_LIMIT)


def _same_aggregate(first: Trade, second: Trade) -> bool:
    return (first.time_ms, first.price, first.is_buyer_maker) == (second.time_ms, second.price, second.is_buyer_maker)


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


def _limit(query: dict[str, str], default: int, maximum: int) -> int:
    limit = _unsigned(query, "limit")
    if limit is not None and limit < 1:
        raise BinanceError(-1130, "Data sent for parameter 'limit' is not valid.")
    return default if limit is None else min(limit, maximum)


def _listed(market: Market, symbol_id: str) -> str:
    if all(listing.symbol_id != symbol_id for listing in market.listings()):
        raise invalid_symbol()
    return symbol_id


# --- routes: (query, market, now_ms) -> body -------------------------------------------------


def _ping(params: QueryPairs, market: Market, now_ms: int) -> object:
    return {}


def _time(params: QueryPairs, market: Market, now_ms: int) -> object:
    return server_time_body(now_ms)


def _exchange_info(params: QueryPairs, market: Market, now_ms: int) -> object:
    return exchange_info_body(select_exchange_info_listings(params, market.listings()), now_ms)


def _klines(params: QueryPairs, market: Market, now_ms: int) -> object:
    parsed = parse_klines_request(params)
    _listed(market, parsed.symbol_id)
    return klines_body(market.klines(parsed.symbol_id, parsed.interval, parsed.window, now_ms))


def _depth(params: QueryPairs, market: Market, now_ms: int) -> object:
    query = _single_valued(params, _DEPTH_PARAMS)
    symbol_id = _listed(market, _symbol(query, "symbol"))
    book = book_snapshot(market, symbol_id, depth_limit(params), now_ms)
    return {
        "lastUpdateId": book.update_id,
        "bids": [[fmt8(level.price), fmt8(level.size)] for level in book.bids],
        "asks": [[fmt8(level.price), fmt8(level.size)] for level in book.asks],
    }


def _ticker_24hr(params: QueryPairs, market: Market, now_ms: int) -> object:
    query = _single_valued(params, _TICKER_PARAMS)
    kind = query.get("type", "FULL")
    if kind not in ("FULL", "MINI"):
        raise BinanceError(-1139, "Invalid ticker type.")
    mini = kind == "MINI"
    if "symbol" in query and "symbols" in query:
        raise BinanceError(-1128, "Combination of optional parameters invalid.")
    if "symbol" in query:
        symbol_id = _listed(market, _symbol(query, "symbol"))
        return ticker_body(symbol_id, ticker_snapshot(market, symbol_id, now_ms), mini)
    wanted = (
        _symbol_list(query["symbols"]) if "symbols" in query else [listing.symbol_id for listing in market.listings()]
    )
    return [ticker_body(_listed(market, s), ticker_snapshot(market, s, now_ms), mini) for s in wanted]


def _trades(params: QueryPairs, market: Market, now_ms: int) -> object:
    query = _single_valued(params, _TRADES_PARAMS)
    symbol_id = _listed(market, _symbol(query, "symbol"))
    window = TradeWindow(limit=_limit(query, DEFAULT_TRADES_LIMIT, MAX_TRADES_LIMIT), newest_first=True)
    return trades_body(market.trades(symbol_id, window, now_ms))


def _historical_trades(params: QueryPairs, market: Market, now_ms: int) -> object:
    query = _single_valued(params, _HISTORICAL_TRADES_PARAMS)
    symbol_id = _listed(market, _symbol(query, "symbol"))
    limit = _limit(query, DEFAULT_TRADES_LIMIT, MAX_TRADES_LIMIT)
    from_id = _unsigned(query, "fromId")
    window = TradeWindow(limit=limit, newest_first=True) if from_id is None else TradeWindow(from_id, limit=limit)
    return trades_body(market.trades(symbol_id, window, now_ms))


def _agg_trades(params: QueryPairs, market: Market, now_ms: int) -> object:
    parsed = parse_agg_trades_request(params)
    _listed(market, parsed.symbol_id)
    return agg_trades_body(select_agg_trades(market, parsed, now_ms))


def _depth_weight(params: QueryPairs) -> int:
    try:
        limit = depth_limit(params)
    except BinanceError:
        return 1
    return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250


def _ticker_weight(params: QueryPairs) -> int:
    names = {name for name, _ in params}
    if "symbol" in names:
        return 2
    return 40 if "symbols" in names else 80


def _fixed(weight: int) -> Callable[[QueryPairs], int]:
    return lambda params: weight


ROUTES: tuple[Route, ...] = (
    Route("/ping", "time", _ping, _fixed(1)),
    Route("/time", "time", _time, _fixed(1)),
    Route("/exchangeInfo", "markets", _exchange_info, _fixed(20)),
    Route("/klines", "ohlcv", _klines, _fixed(2)),
    Route("/depth", "orderbook", _depth, _depth_weight),
    Route("/ticker/24hr", "ticker", _ticker_24hr, _ticker_weight),
    Route("/trades", "trades", _trades, _fixed(25)),
    Route("/historicalTrades", "trades", _historical_trades, _fixed(25)),
    Route("/aggTrades", "trades", _agg_trades, _fixed(4)),
)


def records(dataset: str, body: object) -> list[object]:
    if dataset == "markets":
        symbols = body.get("symbols") if isinstance(body, dict) else None
        return list(symbols) if isinstance(symbols, list) else []
    if isinstance(body, list):
        return list(body)
    if isinstance(body, dict) and "code" not in body:
        return [body]
    return []


def rate_limited(status: int, retry_after_s: float, now_ms: int) -> Reply:
    if status == 418:
        until = now_ms + int(retry_after_s * 1000)
        msg = f"Way too many requests; IP(127.0.0.1) banned until {until}. Please use the websocket for live updates to avoid bans."
    else:
        msg = "Too many requests; current limit of IP(127.0.0.1) is 6000 requests per minute. Please use the websocket for live updates to avoid polling the API."
    return Reply({"code": -1003, "msg": msg}, status, {"Retry-After": retry_after_header(retry_after_s)})


def server_error(status: int, now_ms: int) -> object:
    if status == 503:
        return {
            "code": -1008,
            "msg": "Server is currently overloaded with other requests. Please try again in a few minutes.",
        }
    return {"code": -1001, "msg": "Internal error; unable to process your request. Please try again."}


# Binance's own prefix, and the bare root: overriding ccxt's `urls['api']` entries with the bare
# base URL drops the prefix, keeping the original URL paths keeps it; both reach the same routes.
SPOT_API_PREFIX = "/api/v3"

VENUE = Venue(
    name="binance",
    prefixes=(SPOT_API_PREFIX, ""),
    routes=ROUTES,
    records=records,
    row_fields={"ohlcv": KLINE_FIELDS},
    rate_limited=rate_limited,
    server_error=server_error,
    default_rate_limit_status=429,
    weight_header="X-MBX-USED-WEIGHT-1M",
)
