"""Bybit v5 public spot websocket streams, in Bybit's wire format, at the path ccxt pro connects to.

ccxt pro opens `wss://stream.bybit.com/v5/public/spot` and sends
`{"op": "subscribe", "args": ["publicTrade.BTCUSDT"], "req_id": 1}`, answered by
`{"success": true, "ret_msg": "", "conn_id": ..., "req_id": "1", "op": "subscribe"}`;
`unsubscribe` likewise. Its heartbeat `{"op": "ping", "req_id": ...}` is answered by
`{"success": true, "ret_msg": "pong", "conn_id": ..., "op": "ping"}` (ccxt counts a connection
dead after two keep-alive periods without a pong). A request naming an unknown topic, symbol,
interval or depth, or more than `MAX_ARGS` topics, is refused as a whole with `"success": false`
and Bybit's `ret_msg`.

Topics served (every push is `{"topic", "type", "ts", "data"}`):

* `publicTrade.<symbol>`: a `snapshot` whose `data` lists trades (`T` time, `s`, `S` taker side,
  `v`, `p`, `i` trade id as a string, `BT` block trade); spot trades carry no `L` tick direction
  (Bybit documents it for derivatives only);
* `tickers.<symbol>`: the spot 24h ticker (`lastPrice`, `prevPrice24h`, `highPrice24h`,
  `lowPrice24h`, `volume24h`, `turnover24h`, `price24hPcnt`, `usdIndexPrice`) as REST's
  `/v5/market/tickers` has it, always a `snapshot`;
* `kline.<interval>.<symbol>`: REST's interval names (`1`, `60`, `D`...); `data` holds the candle
  with `confirm` true on its final push;
* `orderbook.<depth>.<symbol>` (depth 1, 50, 200 or 1000): a `snapshot` then `delta`s computed on
  that depth (a level leaving it is sent with size 0). `data.u` is Bybit's per-message update id:
  the book's tick, so consecutive pushes differ by one and a lost one shows as a gap; `data.seq`
  is the book's update id (`live.py`), the same as REST's `/v5/market/orderbook` `u`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import orjson

from cryptoflow_exchange_sim.bybit import KLINE_INTERVALS, ticker_record
from cryptoflow_exchange_sim.derived import TickerSnapshot
from cryptoflow_exchange_sim.intervals import Interval
from cryptoflow_exchange_sim.market import Kline, Market, Trade
from cryptoflow_exchange_sim.streams import BookView, Frame, Request, Subscription

PATH = "/v5/public/spot"
BOOK_DEPTHS = frozenset({1, 50, 200, 1000})
# Bybit's spot streams take at most 10 topics in one request.
MAX_ARGS = 10
# Trades of one push; a busier instant is split over several pushes.
MAX_TRADES_PER_PUSH = 1024
# The spot ticker fields Bybit pushes (REST's record also has the top of the book).
_TICKER_FIELDS = (
    "symbol",
    "lastPrice",
    "highPrice24h",
    "lowPrice24h",
    "prevPrice24h",
    "volume24h",
    "turnover24h",
    "price24hPcnt",
    "usdIndexPrice",
)
_INTERVAL_NAMES: dict[Interval, str] = {interval: name for name, interval in KLINE_INTERVALS.items()}


class TopicError(ValueError):
    """A topic Bybit would refuse; its message is Bybit's `ret_msg`."""


class BybitWs:
    name: str = "bybit"
    paths: tuple[str, ...] = (PATH,)

    def read(self, text: str, market: Market, now_ms: int) -> Request:
        asked = Request()
        try:
            message = orjson.loads(text)
        except orjson.JSONDecodeError:
            asked.replies.append(_reply(False, "error:request not json", None, ""))
            return asked
        if not isinstance(message, dict):
            asked.replies.append(_reply(False, "error:request not json", None, ""))
            return asked
        op = message.get("op")
        req_id = message.get("req_id")
        if op == "ping":
            asked.replies.append(_reply(True, "pong", req_id, "ping"))
        elif op in ("subscribe", "unsubscribe"):
            args = message.get("args")
            try:
                if not isinstance(args, list) or not args:
                    raise TopicError("error:args is empty")
                if len(args) > MAX_ARGS:
                    raise TopicError(f"args size >{MAX_ARGS}")
                subs = [_subscription(topic, market) for topic in args]
            except TopicError as error:
                asked.replies.append(_reply(False, str(error), req_id, str(op)))
                return asked
            (asked.subscribe if op == "subscribe" else asked.unsubscribe).extend(subs)
            asked.replies.append(_reply(True, "", req_id, str(op)))
        else:
            asked.replies.append(_reply(False, "error:invalid op", req_id, "" if op is None else str(op)))
        return asked

    def trade_frames(self, sub: Subscription, trades: Sequence[Trade], now_ms: int) -> list[Frame]:
        return [
            orjson.dumps(
                {
                    "topic": sub.name,
                    "type": "snapshot",
                    "ts": now_ms,
                    "data": [_trade(sub.symbol_id, trade) for trade in trades[start : start + MAX_TRADES_PER_PUSH]],
                }
            )
            for start in range(0, len(trades), MAX_TRADES_PER_PUSH)
        ]

    def ticker_frame(self, sub: Subscription, ticker: TickerSnapshot, now_ms: int) -> Frame:
        record = ticker_record(sub.symbol_id, ticker)
        last_id = ticker.trades.last_id
        return orjson.dumps(
            {
                "topic": sub.name,
                "ts": now_ms,
                "type": "snapshot",
                "cs": 0 if last_id is None else last_id,
                "data": {name: record[name] for name in _TICKER_FIELDS},
            }
        )

    def kline_frame(self, sub: Subscription, kline: Kline, closed: bool, now_ms: int) -> Frame:
        assert sub.interval is not None
        return orjson.dumps(
            {
                "topic": sub.name,
                "data": [
                    {
                        "start": kline.open_time,
                        "end": kline.close_time,
                        "interval": _INTERVAL_NAMES[sub.interval],
                        "open": kline.open,
                        "close": kline.close,
                        "high": kline.high,
                        "low": kline.low,
                        "volume": kline.volume,
                        "turnover": kline.quote_volume,
                        "confirm": closed,
                        "timestamp": now_ms,
                    }
                ],
                "ts": now_ms,
                "type": "snapshot",
            }
        )

    def book_frame(self, sub: Subscription, view: BookView, now_ms: int) -> Frame:
        return orjson.dumps(
            {
                "topic": sub.name,
                "type": "snapshot" if view.snapshot else "delta",
                "ts": now_ms,
                "data": {
                    "s": sub.symbol_id,
                    "b": [list(level) for level in view.bids],
                    "a": [list(level) for level in view.asks],
                    "u": view.tick,
                    "seq": view.last_id,
                },
                "cts": now_ms,
            }
        )

    def sends_book_snapshot(self, sub: Subscription) -> bool:
        return True


def _reply(success: bool, ret_msg: str, req_id: object, op: str) -> bytes:
    reply: dict[str, object] = {"success": success, "ret_msg": ret_msg, "conn_id": str(uuid.uuid4())}
    if req_id is not None:
        reply["req_id"] = str(req_id)
    reply["op"] = op
    return orjson.dumps(reply)


def _trade(symbol_id: str, trade: Trade) -> dict[str, object]:
    return {
        "T": trade.time_ms,
        "s": symbol_id,
        "S": "Sell" if trade.is_buyer_maker else "Buy",
        "v": trade.qty,
        "p": trade.price,
        "i": str(trade.id),
        "BT": False,
    }


def _subscription(topic: object, market: Market) -> Subscription:
    if not isinstance(topic, str):
        raise TopicError(f"error:handler not found,topic:{topic}")
    parts = topic.split(".")
    channel, symbol_id = parts[0], parts[-1]
    if channel == "publicTrade" and len(parts) == 2:
        return Subscription("trades", _listed(symbol_id, topic, market), name=topic)
    if channel == "tickers" and len(parts) == 2:
        return Subscription("ticker", _listed(symbol_id, topic, market), name=topic)
    if channel == "kline" and len(parts) == 3 and parts[1] in KLINE_INTERVALS:
        interval = KLINE_INTERVALS[parts[1]]
        return Subscription("ohlcv", _listed(symbol_id, topic, market), interval=interval, name=topic)
    if channel == "orderbook" and len(parts) == 3 and parts[1].isdigit() and int(parts[1]) in BOOK_DEPTHS:
        depth = int(parts[1])
        return Subscription("orderbook", _listed(symbol_id, topic, market), depth=depth, name=topic)
    raise TopicError(f"error:handler not found,topic:{topic}")


def _listed(symbol_id: str, topic: str, market: Market) -> str:
    if any(listing.symbol_id == symbol_id for listing in market.listings()):
        return symbol_id
    raise TopicError(f"Invalid symbol :[{topic}]")


VENUE = BybitWs()
