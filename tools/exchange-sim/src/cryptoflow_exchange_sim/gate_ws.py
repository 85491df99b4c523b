"""Gate API v4 spot websocket streams, in Gate's wire format, at the path ccxt pro connects to.

ccxt pro opens `wss://api.gateio.ws/ws/v4/` and sends
`{"id": 1, "time": ..., "channel": "spot.trades", "event": "subscribe", "payload": ["BTC_USDT"]}`,
answered by `{"time", "time_ms", "id", "conn_id", "trace_id", "channel", "event": "subscribe",
"payload", "result": {"status": "success"}, "requestId"}`; `unsubscribe` likewise. A request
naming an unknown pair, interval or level is refused as a whole with Gate's
`"error": {"code": 2, "message": ...}` and `"result": {"status": "fail"}`; an unreadable one with
code 1. `{"channel": "spot.ping"}` is answered by `spot.pong` (ccxt itself keeps the connection
alive with websocket pings). `conn_id` is one per connection.

Channels served (every push is `{"time", "time_ms", "channel", "event": "update", "result"}`):

* `spot.trades` (payload: pairs): one push per trade, `result` = `id`, `create_time` (s),
  `create_time_ms` (ms with decimals, a string), `side` (the taker's: `sell` when the buyer
  was the maker), `currency_pair`, `amount`, `price`, `range`;
* `spot.tickers` (payload: pairs): REST's `/spot/tickers` record;
* `spot.candlesticks` (payload `[interval, pair]`, REST's interval names): `t` (open time, s,
  a string), `v` (quote volume), `c`, `h`, `l`, `o`, `n` (`1m_BTC_USDT`), `a` (base volume),
  `w` (true on the candle's final push, once it closed). ccxt reads `v` as the volume, so its
  websocket candles carry the quote volume where its REST candles carry the base volume;
* `spot.obu` (order book v2, what ccxt's `gate` subscribes to for spot; payload
  `["ob.BTC_USDT.50"]`, level 50 or 400): first a full book (`full: true`, `u` = its update id),
  then deltas computed on that level (`U`/`u` update ids, a level leaving the top sent with size
  0); a delta whose `U` is not the previous `u` + 1 is a gap (Gate: resubscribe);
* `spot.order_book_update` (the v1 diff channel, what ccxt's `gateeu` subscribes to; payload
  `[pair, "100ms"|"20ms"]`): deltas of the whole book (`e: depthUpdate`, `U`/`u`), no snapshot;
  the REST `/api/v4/spot/order_book?with_id=true` answer (`id`) is the other half of the sync
  recipe, so a `stale_snapshot` stream fault applies to it.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from contextvars import ContextVar
from typing import Literal

import orjson

from cryptoflow_exchange_sim.derived import TickerSnapshot
from cryptoflow_exchange_sim.gate import CANDLE_INTERVALS, pair_id, ticker_record
from cryptoflow_exchange_sim.market import Kline, Market, Trade
from cryptoflow_exchange_sim.streams import BookView, Frame, Request, Subscription

PATH = "/ws/v4/"
OBU_LEVELS = frozenset({50, 400})
V1_SPEEDS = frozenset({"20ms", "100ms"})
TRADES = "spot.trades"
TICKERS = "spot.tickers"
CANDLES = "spot.candlesticks"
OBU = "spot.obu"
BOOK_UPDATES = "spot.order_book_update"
PING = "spot.ping"
PONG = "spot.pong"
# Gate's error codes: 1 an unreadable request, 2 an invalid argument.
_UNREADABLE = 1
_INVALID = 2

# Per connection: `read` runs in the connection's handler task, whose context the feeds it starts
# copy (`asyncio.create_task`), so these hold one value per connection, and per request for the feeds.
_CONN_ID: ContextVar[str | None] = ContextVar("gate_ws_conn_id", default=None)


class RequestError(ValueError):
    """A request Gate would refuse: its code and message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class GateWs:
    name: str = "gate"
    paths: tuple[str, ...] = (PATH,)

    def read(self, text: str, market: Market, now_ms: int) -> Request:
        asked = Request()
        try:
            message = orjson.loads(text)
        except orjson.JSONDecodeError:
            message = None
        if not isinstance(message, dict):
            asked.replies.append(_error(now_ms, {}, _UNREADABLE, "invalid request body format"))
            return asked
        channel, event = message.get("channel"), message.get("event")
        if channel == PING:
            asked.replies.append(_answer(now_ms, message, PONG, "", None))
            return asked
        if event not in ("subscribe", "unsubscribe"):
            asked.replies.append(_error(now_ms, message, _UNREADABLE, f"unknown event {event}"))
            return asked
        try:
            subs = _subscriptions(channel, message.get("payload"), market)
        except RequestError as error:
            asked.replies.append(_error(now_ms, message, error.code, error.message))
            return asked
        if event == "subscribe":
            asked.subscribe.extend(subs)
        else:
            asked.unsubscribe.extend(subs)
        asked.replies.append(_answer(now_ms, message, str(channel), str(event), {"status": "success"}))
        return asked

    def trade_frames(self, sub: Subscription, trades: Sequence[Trade], now_ms: int) -> list[Frame]:
        pair = _pair(sub)
        return [
            _push(
                now_ms,
                TRADES,
                {
                    "id": trade.id,
                    "create_time": trade.time_ms // 1000,
                    "create_time_ms": f"{trade.time_ms}.000000",
                    "side": "sell" if trade.is_buyer_maker else "buy",
                    "currency_pair": pair,
                    "amount": trade.qty,
                    "price": trade.price,
                    "range": f"{trade.id}-{trade.id}",
                },
            )
            for trade in trades
        ]

    def ticker_frame(self, sub: Subscription, ticker: TickerSnapshot, now_ms: int) -> Frame:
        return _push(now_ms, TICKERS, ticker_record(_pair(sub), ticker))

    def kline_frame(self, sub: Subscription, kline: Kline, closed: bool, now_ms: int) -> Frame:
        return _push(
            now_ms,
            CANDLES,
            {
                "t": str(kline.open_time // 1000),
                "v": kline.quote_volume,
                "c": kline.close,
                "h": kline.high,
                "l": kline.low,
                "o": kline.open,
                "n": sub.name,
                "a": kline.volume,
                "w": closed,
            },
        )

    def book_frame(self, sub: Subscription, view: BookView, now_ms: int) -> Frame:
        bids = [list(level) for level in view.bids]
        asks = [list(level) for level in view.asks]
        if _book_channel(sub) == OBU:
            if view.snapshot:
                result: dict[str, object] = {"t": now_ms, "full": True, "s": sub.name, "u": view.last_id}
            else:
                result = {"t": now_ms, "s": sub.name, "U": view.first_id, "u": view.last_id}
            return _push(now_ms, OBU, result | {"b": bids, "a": asks})
        return _push(
            now_ms,
            BOOK_UPDATES,
            {
                "t": now_ms,
                "e": "depthUpdate",
                "E": now_ms // 1000,
                "s": _pair(sub),
                "U": view.first_id,
                "u": view.last_id,
                "b": bids,
                "a": asks,
            },
        )

    def sends_book_snapshot(self, sub: Subscription) -> bool:
        # spot.obu starts with a full book; spot.order_book_update sends deltas only (REST has the snapshot).
        return sub.name.startswith("ob.")


# --- subscriptions --------------------------------------------------------------------------
#
# A subscription's name is Gate's own for it, and says what its frames need: `BTC_USDT@spot.trades`,
# `BTC_USDT@spot.tickers`, `1m_BTC_USDT` (the candles' `n`), `ob.BTC_USDT.50` (the obu's `s`),
# `BTC_USDT@spot.order_book_update@100ms`.


def _subscriptions(channel: object, payload: object, market: Market) -> list[Subscription]:
    if not isinstance(payload, list) or not payload or not all(isinstance(item, str) for item in payload):
        raise RequestError(_INVALID, "payload must be a non-empty list of strings")
    items: list[str] = payload
    if channel in (TRADES, TICKERS):
        kind: Literal["trades", "ticker"] = "trades" if channel == TRADES else "ticker"
        return [Subscription(kind, _listed(pair, market), name=f"{pair}@{channel}") for pair in items]
    if channel == CANDLES:
        if len(items) != 2:
            raise RequestError(_INVALID, "payload must be [interval, currency_pair]")
        interval_name, pair = items
        interval = CANDLE_INTERVALS.get(interval_name)
        if interval is None:
            raise RequestError(_INVALID, f"invalid interval: {interval_name}")
        name = f"{interval_name}_{pair}"
        return [Subscription("ohlcv", _listed(pair, market), interval=interval, name=name)]
    if channel == OBU:
        return [_obu(item, market) for item in items]
    if channel == BOOK_UPDATES:
        if len(items) != 2:
            raise RequestError(_INVALID, "payload must be [currency_pair, interval]")
        pair, speed = items
        if speed not in V1_SPEEDS:
            raise RequestError(_INVALID, f"invalid interval: {speed}")
        return [Subscription("orderbook", _listed(pair, market), name=f"{pair}@{BOOK_UPDATES}@{speed}")]
    raise RequestError(_INVALID, f"unknown channel {channel}")


def _obu(item: str, market: Market) -> Subscription:
    parts = item.split(".")
    if len(parts) != 3 or parts[0] != "ob" or not parts[2].isdigit() or int(parts[2]) not in OBU_LEVELS:
        raise RequestError(_INVALID, f"invalid payload {item}")
    return Subscription("orderbook", _listed(parts[1], market), depth=int(parts[2]), name=item)


def _listed(pair: str, market: Market) -> str:
    for listing in market.listings():
        if pair_id(listing) == pair:
            return listing.symbol_id
    raise RequestError(_INVALID, f"unknown currency pair: {pair}")


def _pair(sub: Subscription) -> str:
    """The Gate pair a subscription's name holds (see above)."""
    if sub.name.startswith("ob."):
        return sub.name.split(".")[1]
    if sub.channel == "ohlcv":
        return sub.name.partition("_")[2]
    return sub.name.partition("@")[0]


def _book_channel(sub: Subscription) -> str:
    return OBU if sub.name.startswith("ob.") else BOOK_UPDATES


# --- frames ---------------------------------------------------------------------------------


def _conn_id() -> str:
    conn_id = _CONN_ID.get()
    if conn_id is None:
        conn_id = secrets.token_hex(8)
        _CONN_ID.set(conn_id)
    return conn_id


def _push(now_ms: int, channel: str, result: object) -> bytes:
    return orjson.dumps(
        {"time": now_ms // 1000, "time_ms": now_ms, "channel": channel, "event": "update", "result": result}
    )


def _header(now_ms: int, message: dict[str, object], channel: str, event: str) -> dict[str, object]:
    trace_id = secrets.token_hex(16)
    header: dict[str, object] = {"time": now_ms // 1000, "time_ms": now_ms}
    if message.get("id") is not None:
        header["id"] = message["id"]
    header |= {"conn_id": _conn_id(), "trace_id": trace_id, "channel": channel, "event": event}
    if "payload" in message:
        header["payload"] = message["payload"]
    return header | {"requestId": trace_id}


def _answer(now_ms: int, message: dict[str, object], channel: str, event: str, result: object) -> bytes:
    return orjson.dumps(_header(now_ms, message, channel, event) | {"result": result})


def _error(now_ms: int, message: dict[str, object], code: int, text: str) -> bytes:
    channel, event = message.get("channel"), message.get("event")
    header = _header(now_ms, message, "" if channel is None else str(channel), "" if event is None else str(event))
    return orjson.dumps(header | {"error": {"code": code, "message": text}, "result": {"status": "fail"}})


VENUE = GateWs()
