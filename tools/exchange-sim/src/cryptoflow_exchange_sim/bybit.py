"""Bybit v5 public spot REST wire format (`/v5/market/...`): requests, bodies, errors.

Every answer is Bybit's envelope `{"retCode", "retMsg", "result", "retExtInfo", "time"}`;
refusals keep HTTP 200 and carry a non-zero `retCode` (10001 for parameter errors), which is
what ccxt's `bybit.handle_errors` maps to exceptions. Only `category=spot` has instruments;
another category lists none and its symbols are "Not supported symbols".

Endpoints and page sizes: instruments-info; kline (limit 1..1000, default 200; with `start`
the oldest `limit` candles from the one containing `start`, else the newest up to `end`/now;
always returned NEWEST FIRST); tickers; orderbook (spot limit 1..200, default 1); recent-trade
(spot limit 1..60, default 60, newest first, no history); time. Limits above the maximum are
cut to it.
"""

from __future__ import annotations

import re

from cryptoflow_exchange_sim.derived import TickerSnapshot, book_snapshot, fmt8, ticker_snapshot
from cryptoflow_exchange_sim.intervals import INTERVALS, Interval
from cryptoflow_exchange_sim.market import Kline, KlineWindow, Listing, Market, Trade, TradeWindow
from cryptoflow_exchange_sim.wire import JsonObject, QueryPairs, Reply, Route, Venue, WireError, retry_after_header

KLINE_INTERVALS: dict[str, Interval] = {
    "1": INTERVALS["1m"], "3": INTERVALS["3m"], "5": INTERVALS["5m"], "15": INTERVALS["15m"],
    "30": INTERVALS["30m"], "60": INTERVALS["1h"], "120": INTERVALS["2h"], "240": INTERVALS["4h"],
    "360": INTERVALS["6h"], "720": INTERVALS["12h"], "D": INTERVALS["1d"], "W": INTERVALS["1w"],
    "M": INTERVALS["1M"],
}  # fmt: skip
KLINE_FIELDS = ("open_time", "open", "high", "low", "close", "volume", "quote_volume")
DEFAULT_KLINE_LIMIT = 200
MAX_KLINE_LIMIT = 1000
DEFAULT_BOOK_LIMIT = 1
MAX_BOOK_LIMIT = 200
DEFAULT_TRADES_LIMIT = 60
MAX_TRADES_LIMIT = 60
SPOT = "spot"
_UNSIGNED = re.compile(r"^[0-9]{1,20}$")
_STEP = "0.00000001"


class BybitError(WireError):
    """A refusal: HTTP 200 with Bybit's envelope and a non-zero `retCode`."""

    def __init__(self, code: int, msg: str, now_ms: int) -> None:
        super().__init__(f"{code} {msg}")
        self.code = code
        self.msg = msg
        self.now_ms = now_ms

    def reply(self) -> Reply:
        return Reply(envelope({}, self.now_ms, self.code, self.msg))


def envelope(result: object, now_ms: int, code: int = 0, msg: str = "OK") -> JsonObject:
    return {"retCode": code, "retMsg": msg, "result": result, "retExtInfo": {}, "time": now_ms}


def kline_row(kline: Kline) -> list[str]:
    return [str(kline.open_time), kline.open, kline.high, kline.low, kline.close, kline.volume, kline.quote_volume]


def instrument(listing: Listing) -> JsonObject:
    return {
        "symbol": listing.symbol_id,
        "baseCoin": listing.base_asset,
        "quoteCoin": listing.quote_asset,
        "innovation": "0",
        "status": "Trading",
        "marginTrading": "none",
        "lotSizeFilter": {
            "basePrecision": _STEP,
            "quotePrecision": _STEP,
            "minOrderQty": _STEP,
            "maxOrderQty": "9000000",
            "minOrderAmt": _STEP,
            "maxOrderAmt": "9000000",
        },
        "priceFilter": {"tickSize": _STEP},
    }


def ticker_record(symbol_id: str, ticker: TickerSnapshot) -> JsonObject:
    return {
        "symbol": symbol_id,
        "bid1Price": fmt8(ticker.bid.price),
        "bid1Size": fmt8(ticker.bid.size),
        "ask1Price": fmt8(ticker.ask.price),
        "ask1Size": fmt8(ticker.ask.size),
        "lastPrice": fmt8(ticker.last),
        "prevPrice24h": fmt8(ticker.open),
        "price24hPcnt": f"{ticker.change_ratio():.4f}",
        "highPrice24h": fmt8(ticker.high),
        "lowPrice24h": fmt8(ticker.low),
        "turnover24h": fmt8(ticker.quote_volume),
        "volume24h": fmt8(ticker.volume),
        # Bybit's USD index of the base coin; the simulator has none to offer.
        "usdIndexPrice": "",
    }


def trade_record(symbol_id: str, trade: Trade) -> JsonObject:
    return {
        "execId": str(trade.id),
        "symbol": symbol_id,
        "price": trade.price,
        "size": trade.qty,
        "side": "Sell" if trade.is_buyer_maker else "Buy",
        "time": str(trade.time_ms),
        "isBlockTrade": False,
    }


# --- routes ---------------------------------------------------------------------------------


def _instruments(params: QueryPairs, market: Market, now_ms: int) -> object:
    query = _query(params, now_ms)
    category = _category(query, now_ms)
    listings = list(market.listings()) if category == SPOT else []
    if "symbol" in query:
        listings = [listing for listing in listings if listing.symbol_id == query["symbol"]]
    if query.get("status", "Trading") != "Trading":
        listings = []
    return envelope({"category": category, "list": [instrument(listing) for listing in listings]}, now_ms)


def _kline(params: QueryPairs, market: Market, now_ms: int) -> object:
    query = _query(params, now_ms)
    category = _category(query, now_ms)
    symbol_id = _symbol(market, query, category, now_ms)
    interval = KLINE_INTERVALS.get(query.get("interval", ""))
    if interval is None:
        raise BybitError(10001, "Invalid period!", now_ms)
    start = _unsigned(query, "start", now_ms)
    end = _unsigned(query, "end", now_ms)
    if start is not None and end is not None and start > end:
        raise BybitError(10001, "params error: start must be less than end", now_ms)
    limit = _limit(query, DEFAULT_KLINE_LIMIT, MAX_KLINE_LIMIT, now_ms)
    # With `start`, Bybit begins at the candle that contains it.
    window = KlineWindow(None if start is None else interval.floor(start), end, limit)
    klines = market.klines(symbol_id, interval, window, now_ms)
    rows = [kline_row(kline) for kline in reversed(klines)]
    return envelope({"symbol": symbol_id, "category": category, "list": rows}, now_ms)


def _tickers(params: QueryPairs, market: Market, now_ms: int) -> object:
    query = _query(params, now_ms)
    category = _category(query, now_ms)
    if "symbol" in query:
        symbol_ids = [_symbol(market, query, category, now_ms)]
    else:
        symbol_ids = [listing.symbol_id for listing in market.listings()] if category == SPOT else []
    tickers = [ticker_record(s, ticker_snapshot(market, s, now_ms)) for s in symbol_ids]
    return envelope({"category": category, "list": tickers}, now_ms)


def _orderbook(params: QueryPairs, market: Market, now_ms: int) -> object:
    query = _query(params, now_ms)
    category = _category(query, now_ms)
    symbol_id = _symbol(market, query, category, now_ms)
    limit = _limit(query, DEFAULT_BOOK_LIMIT, MAX_BOOK_LIMIT, now_ms)
    book = book_snapshot(market, symbol_id, limit, now_ms)
    result = {
        "s": symbol_id,
        "a": [[fmt8(level.price), fmt8(level.size)] for level in book.asks],
        "b": [[fmt8(level.price), fmt8(level.size)] for level in book.bids],
        "ts": now_ms,
        "u": book.update_id,
    }
    return envelope(result, now_ms)


def _recent_trade(params: QueryPairs, market: Market, now_ms: int) -> object:
    query = _query(params, now_ms)
    category = _category(query, now_ms)
    symbol_id = _symbol(market, query, category, now_ms)
    limit = _limit(query, DEFAULT_TRADES_LIMIT, MAX_TRADES_LIMIT, now_ms)
    trades = market.trades(symbol_id, TradeWindow(limit=limit, newest_first=True), now_ms)
    records_ = [trade_record(symbol_id, trade) for trade in reversed(trades)]
    return envelope({"category": category, "list": records_}, now_ms)


def _time(params: QueryPairs, market: Market, now_ms: int) -> object:
    return envelope({"timeSecond": str(now_ms // 1000), "timeNano": str(now_ms * 1_000_000)}, now_ms)


def _query(params: QueryPairs, now_ms: int) -> dict[str, str]:
    query: dict[str, str] = {}
    for name, value in params:
        if name in query:
            raise BybitError(10001, f"params error: duplicate parameter {name}", now_ms)
        query[name] = value
    return query


def _category(query: dict[str, str], now_ms: int) -> str:
    category = query.get("category", "")
    if category not in ("spot", "linear", "inverse", "option"):
        raise BybitError(10001, "Illegal category", now_ms)
    return category


def _symbol(market: Market, query: dict[str, str], category: str, now_ms: int) -> str:
    symbol_id = query.get("symbol", "")
    if not symbol_id:
        raise BybitError(10001, "params error: symbol is required", now_ms)
    if category != SPOT or all(listing.symbol_id != symbol_id for listing in market.listings()):
        raise BybitError(10001, "Not supported symbols", now_ms)
    return symbol_id


def _unsigned(query: dict[str, str], name: str, now_ms: int) -> int | None:
    value = query.get(name)
    if value is None:
        return None
    if not _UNSIGNED.match(value):
        raise BybitError(10001, f"params error: {name} invalid", now_ms)
    return int(value)


def _limit(query: dict[str, str], default: int, maximum: int, now_ms: int) -> int:
    limit = _unsigned(query, "limit", now_ms)
    if limit is not None and limit < 1:
        raise BybitError(10001, "params error: limit invalid", now_ms)
    return default if limit is None else min(limit, maximum)


ROUTES: tuple[Route, ...] = (
    Route("/v5/market/instruments-info", "markets", _instruments),
    Route("/v5/market/kline", "ohlcv", _kline),
    Route("/v5/market/tickers", "ticker", _tickers),
    Route("/v5/market/orderbook", "orderbook", _orderbook),
    Route("/v5/market/recent-trade", "trades", _recent_trade),
    Route("/v5/market/time", "time", _time),
)


def records(dataset: str, body: object) -> list[object]:
    if not isinstance(body, dict) or body.get("retCode") != 0:
        return []
    result = body.get("result")
    if not isinstance(result, dict):
        return []
    listed = result.get("list")
    return list(listed) if isinstance(listed, list) else [result]


def rate_limited(status: int, retry_after_s: float, now_ms: int) -> Reply:
    reset = str(now_ms + int(retry_after_s * 1000))
    headers = {"Retry-After": retry_after_header(retry_after_s), "X-Bapi-Limit-Reset-Timestamp": reset}
    if status == 403:
        # Bybit's gateway refuses an IP that polls too fast with a bare 403 page.
        return Reply(status=403, headers=headers, raw=b"access too frequent", content_type="text/plain")
    headers |= {"X-Bapi-Limit": "600", "X-Bapi-Limit-Status": "0"}
    return Reply(envelope({}, now_ms, 10006, "Too many visits!"), status, headers)


def server_error(status: int, now_ms: int) -> object:
    return envelope({}, now_ms, 10016, "Internal server error.")


VENUE = Venue(
    name="bybit",
    prefixes=("",),
    routes=ROUTES,
    records=records,
    row_fields={"ohlcv": KLINE_FIELDS},
    rate_limited=rate_limited,
    server_error=server_error,
    default_rate_limit_status=200,
)
