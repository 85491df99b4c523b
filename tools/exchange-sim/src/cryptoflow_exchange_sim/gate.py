"""Gate API v4 public spot REST wire format (`/api/v4/spot/...`): requests, bodies, errors.

Refusals are HTTP 400 with `{"label": ..., "message": ...}` (ccxt's `gate.handle_errors`
maps the label). Pairs are named `BASE_QUOTE`.

Endpoints and page sizes:
* currency_pairs, margin/currency_pairs (none: nothing is margin-tradable), currencies, time;
* candlesticks: `from`/`to` in seconds select the candles opening in [from, to] (at most 1000
  interval slots, else "Candlestick range too broad"); without `from`, the newest `limit`
  (1..1000, default 100) opening at or before `to`/now; oldest first; the 8th column says
  whether the candle has closed. A `limit` sent with `from` is ignored (documented as rejected,
  not enforced on spot). Gate's "Maximum 10000 points ago" rule is not simulated, so recorded
  history stays readable;
* tickers; order_book (limit 1..1000, default 10, `with_id`);
* trades: newest first, limit 1..1000 (default 100). With `last_id`: `reverse=false` gives the
  `limit` trades right after it, `reverse=true` the `limit` right before it (time range
  ignored); otherwise the trades in [from, to] seconds (to defaults to now), page `page`
  (1-based) counted from the newest.
"""

from __future__ import annotations

import re

from cryptoflow_exchange_sim.derived import TickerSnapshot, book_snapshot, find_anchor, fmt8, ticker_snapshot
from cryptoflow_exchange_sim.intervals import INTERVALS, Interval
from cryptoflow_exchange_sim.market import Kline, KlineWindow, Listing, Market, Trade, TradeWindow
from cryptoflow_exchange_sim.wire import JsonObject, QueryPairs, Reply, Route, Venue, WireError, retry_after_header

CANDLE_INTERVALS: dict[str, Interval] = {
    "10s": Interval("10s", 10_000), "1m": INTERVALS["1m"], "5m": INTERVALS["5m"], "15m": INTERVALS["15m"],
    "30m": INTERVALS["30m"], "1h": INTERVALS["1h"], "4h": INTERVALS["4h"], "8h": INTERVALS["8h"],
    "1d": INTERVALS["1d"], "7d": INTERVALS["1w"], "30d": INTERVALS["1M"],
}  # fmt: skip
KLINE_FIELDS = ("open_time", "quote_volume", "close", "high", "low", "open", "volume", "closed")
DEFAULT_CANDLE_LIMIT = 100
MAX_CANDLE_POINTS = 1000
DEFAULT_BOOK_LIMIT = 10
MAX_BOOK_LIMIT = 1000
DEFAULT_TRADES_LIMIT = 100
MAX_TRADES_LIMIT = 1000
_INTEGER = re.compile(r"^-?[0-9]{1,20}$")
_BOOLEANS = {"true": True, "false": False, "1": True, "0": False}
_STEP = "0.00000001"


class GateError(WireError):
    """A refusal: HTTP 400 (by default) with `{"label", "message"}`."""

    def __init__(self, label: str, message: str, http_status: int = 400) -> None:
        super().__init__(f"{label} {message}")
        self.label = label
        self.message = message
        self.http_status = http_status

    def reply(self) -> Reply:
        return Reply({"label": self.label, "message": self.message}, self.http_status)


def pair_id(listing: Listing) -> str:
    return f"{listing.base_asset}_{listing.quote_asset}"


def candle_row(kline: Kline, now_ms: int) -> list[str]:
    closed = "true" if kline.close_time < now_ms else "false"
    return [
        str(kline.open_time // 1000),
        kline.quote_volume,
        kline.close,
        kline.high,
        kline.low,
        kline.open,
        kline.volume,
        closed,
    ]


def currency_pair(listing: Listing) -> JsonObject:
    name = pair_id(listing)
    return {
        "id": name,
        "base": listing.base_asset,
        "base_name": listing.base_asset,
        "quote": listing.quote_asset,
        "quote_name": listing.quote_asset,
        "fee": "0.2",
        "min_base_amount": _STEP,
        "min_quote_amount": _STEP,
        "max_quote_amount": "9000000",
        "amount_precision": 8,
        "precision": 8,
        "trade_status": "tradable",
        "sell_start": 0,
        "buy_start": 0,
        "type": "normal",
        "trade_url": f"https://www.gate.com/trade/{name}",
    }


def currency(code: str) -> JsonObject:
    return {
        "currency": code,
        "name": code,
        "delisted": False,
        "withdraw_disabled": False,
        "withdraw_delayed": False,
        "deposit_disabled": False,
        "trade_disabled": False,
        "fixed_rate": "",
        "chain": code,
        "chains": [
            {
                "name": code,
                "addr": "",
                "withdraw_disabled": False,
                "withdraw_delayed": False,
                "deposit_disabled": False,
            }
        ],
    }


def ticker_record(name: str, ticker: TickerSnapshot) -> JsonObject:
    return {
        "currency_pair": name,
        "last": fmt8(ticker.last),
        "lowest_ask": fmt8(ticker.ask.price),
        "highest_bid": fmt8(ticker.bid.price),
        "change_percentage": f"{ticker.change_ratio() * 100:.2f}",
        "base_volume": fmt8(ticker.volume),
        "quote_volume": fmt8(ticker.quote_volume),
        "high_24h": fmt8(ticker.high),
        "low_24h": fmt8(ticker.low),
    }


def trade_record(name: str, trade: Trade) -> JsonObject:
    return {
        "id": str(trade.id),
        "create_time": str(trade.time_ms // 1000),
        "create_time_ms": f"{trade.time_ms}.000000",
        "currency_pair": name,
        "side": "sell" if trade.is_buyer_maker else "buy",
        "amount": trade.qty,
        "price": trade.price,
        "sequence_id": str(trade.id),
    }


def interval_slots(interval: Interval, start_ms: int, end_ms: int) -> int:
    """How many candles of `interval` open in [start_ms, end_ms]."""
    first = interval.ceil(start_ms)
    if first > end_ms:
        return 0
    if not interval.calendar_month:
        return (interval.floor(end_ms) - first) // interval.length_ms + 1
    slots, cursor = 0, first
    while cursor <= end_ms:
        slots += 1
        cursor = interval.shift(cursor, 1)
    return slots


# --- routes ---------------------------------------------------------------------------------


def _currency_pairs(params: QueryPairs, market: Market, now_ms: int) -> object:
    return [currency_pair(listing) for listing in market.listings()]


def _margin_currency_pairs(params: QueryPairs, market: Market, now_ms: int) -> object:
    return []


def _currencies(params: QueryPairs, market: Market, now_ms: int) -> object:
    codes = sorted({asset for listing in market.listings() for asset in (listing.base_asset, listing.quote_asset)})
    return [currency(code) for code in codes]


def _candlesticks(params: QueryPairs, market: Market, now_ms: int) -> object:
    query = _query(params)
    listing = _pair(market, query)
    name = query.get("interval", "30m")
    interval = CANDLE_INTERVALS.get(name)
    if interval is None:
        raise GateError("INVALID_PARAM_VALUE", f"Invalid interval: {name}")
    start_s = _integer(query, "from")
    end_s = _integer(query, "to")
    limit = _integer(query, "limit")
    if limit is not None and not 1 <= limit <= MAX_CANDLE_POINTS:
        raise GateError("INVALID_PARAM_VALUE", f"Invalid request parameter `limit` value: {limit}")
    if start_s is not None:
        end_ms = now_ms if end_s is None else end_s * 1000
        if start_s * 1000 > end_ms:
            raise GateError("INVALID_PARAM_VALUE", "Invalid time range: from is later than to")
        if interval_slots(interval, start_s * 1000, end_ms) > MAX_CANDLE_POINTS:
            raise GateError(
                "INVALID_PARAM_VALUE", "Candlestick range too broad. Maximum 1000 data points are allowed per request"
            )
        window = KlineWindow(start_s * 1000, end_ms, MAX_CANDLE_POINTS)
    else:
        window = KlineWindow(None, None if end_s is None else end_s * 1000, limit or DEFAULT_CANDLE_LIMIT)
    return [candle_row(kline, now_ms) for kline in market.klines(listing.symbol_id, interval, window, now_ms)]


def _tickers(params: QueryPairs, market: Market, now_ms: int) -> object:
    query = _query(params)
    listings = [_pair(market, query)] if "currency_pair" in query else list(market.listings())
    return [ticker_record(pair_id(item), ticker_snapshot(market, item.symbol_id, now_ms)) for item in listings]


def _order_book(params: QueryPairs, market: Market, now_ms: int) -> object:
    query = _query(params)
    listing = _pair(market, query)
    if query.get("interval", "0") != "0":
        raise GateError("INVALID_PARAM_VALUE", "Invalid interval: only 0 (no aggregation) is simulated")
    limit = _integer(query, "limit")
    if limit is not None and not 1 <= limit <= MAX_BOOK_LIMIT:
        raise GateError("INVALID_PARAM_VALUE", f"Invalid request parameter `limit` value: {limit}")
    with_id = _boolean(query, "with_id")
    book = book_snapshot(market, listing.symbol_id, limit or DEFAULT_BOOK_LIMIT, now_ms)
    anchor = find_anchor(market, listing.symbol_id, now_ms)
    body: JsonObject = {"id": book.update_id} if with_id else {}
    body |= {
        "current": now_ms,
        "update": now_ms if anchor is None else anchor[1].close_time,
        "asks": [[fmt8(level.price), fmt8(level.size)] for level in book.asks],
        "bids": [[fmt8(level.price), fmt8(level.size)] for level in book.bids],
    }
    return body


def _trades(params: QueryPairs, market: Market, now_ms: int) -> object:
    query = _query(params)
    listing = _pair(market, query)
    limit = _integer(query, "limit")
    if limit is not None and not 1 <= limit <= MAX_TRADES_LIMIT:
        raise GateError("INVALID_PARAM_VALUE", f"Invalid request parameter `limit` value: {limit}")
    limit = limit or DEFAULT_TRADES_LIMIT
    last_id = _integer(query, "last_id")
    if last_id is not None:
        if _boolean(query, "reverse"):
            window = TradeWindow(to_id=last_id, limit=limit, newest_first=True)
        else:
            window = TradeWindow(from_id=last_id + 1, limit=limit)
    else:
        start_s, end_s, page = _integer(query, "from"), _integer(query, "to"), _integer(query, "page")
        if page is not None and page < 1:
            raise GateError("INVALID_PARAM_VALUE", f"Invalid request parameter `page` value: {page}")
        window = TradeWindow(
            start_ms=None if start_s is None else start_s * 1000,
            end_ms=None if end_s is None else end_s * 1000 + 999,
            limit=limit,
            newest_first=True,
            skip=((page or 1) - 1) * limit,
        )
    trades = market.trades(listing.symbol_id, window, now_ms)
    return [trade_record(pair_id(listing), trade) for trade in reversed(trades)]


def _time(params: QueryPairs, market: Market, now_ms: int) -> object:
    return {"server_time": now_ms}


def _query(params: QueryPairs) -> dict[str, str]:
    return dict(params)


def _pair(market: Market, query: dict[str, str]) -> Listing:
    name = query.get("currency_pair")
    if not name:
        raise GateError("MISSING_REQUIRED_PARAM", "Missing required parameter: currency_pair")
    listing = next((item for item in market.listings() if pair_id(item) == name), None)
    if listing is None:
        raise GateError("INVALID_CURRENCY_PAIR", f"Invalid currency pair {name}")
    return listing


def _integer(query: dict[str, str], name: str) -> int | None:
    value = query.get(name)
    if value is None:
        return None
    if not _INTEGER.match(value):
        raise GateError("INVALID_PARAM_VALUE", f"Invalid request parameter `{name}` value: {value}")
    return int(value)


def _boolean(query: dict[str, str], name: str) -> bool:
    value = query.get(name, "false")
    parsed = _BOOLEANS.get(value.lower())
    if parsed is None:
        raise GateError("INVALID_PARAM_VALUE", f"Invalid request parameter `{name}` value: {value}")
    return parsed


ROUTES: tuple[Route, ...] = (
    Route("/spot/currency_pairs", "markets", _currency_pairs),
    Route("/margin/currency_pairs", "markets", _margin_currency_pairs),
    Route("/spot/currencies", "currencies", _currencies),
    Route("/spot/candlesticks", "ohlcv", _candlesticks),
    Route("/spot/tickers", "ticker", _tickers),
    Route("/spot/order_book", "orderbook", _order_book),
    Route("/spot/trades", "trades", _trades),
    Route("/spot/time", "time", _time),
)


def records(dataset: str, body: object) -> list[object]:
    if isinstance(body, list):
        return list(body)
    if isinstance(body, dict) and "label" not in body:
        return [body]
    return []


def rate_limited(status: int, retry_after_s: float, now_ms: int) -> Reply:
    headers = {
        "Retry-After": retry_after_header(retry_after_s),
        "X-Gate-RateLimit-Reset-Timestamp": str(now_ms + int(retry_after_s * 1000)),
    }
    return Reply({"label": "TOO_MANY_REQUESTS", "message": "Request Rate limit Exceeded"}, status, headers)


def server_error(status: int, now_ms: int) -> object:
    return {"label": "SERVER_ERROR", "message": "Internal server error"}


# Gate's own prefix, and the bare root (for a ccxt whose URLs all point at the base URL).
API_PREFIX = "/api/v4"

VENUE = Venue(
    name="gate",
    prefixes=(API_PREFIX, ""),
    routes=ROUTES,
    records=records,
    row_fields={"ohlcv": KLINE_FIELDS},
    rate_limited=rate_limited,
    server_error=server_error,
    default_rate_limit_status=429,
)
