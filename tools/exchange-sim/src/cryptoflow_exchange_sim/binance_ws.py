"""Binance spot websocket streams, in Binance's wire format, at the paths ccxt pro connects to.

ccxt pro opens `wss://stream.binance.com:9443/ws/<n>` (raw streams: each frame is the event
itself) and sends `{"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1}`, answered by
`{"result": null, "id": 1}`. Streams served: `<symbol>@trade`, `<symbol>@kline_<interval>`,
`<symbol>@ticker` (24hrTicker), `<symbol>@miniTicker` and `<symbol>@depth[@100ms]` (diff depth: `U`/`u` update ids,
the REST `/api/v3/depth` snapshot is the other half of the sync recipe).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import orjson

from cryptoflow_exchange_sim.derived import TickerSnapshot, fmt8
from cryptoflow_exchange_sim.intervals import INTERVALS
from cryptoflow_exchange_sim.market import Kline, Market, Trade
from cryptoflow_exchange_sim.streams import BookView, Frame, Request, Subscription


class BinanceWs:
    name: str = "binance"
    paths: tuple[str, ...] = ("/ws", "/ws/{stream}", "/stream")

    def read(self, text: str, market: Market, now_ms: int) -> Request:
        try:
            message = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise ValueError("Malformed request") from None
        if not isinstance(message, dict):
            raise ValueError("Invalid request")
        method, params, request_id = message.get("method"), message.get("params") or [], message.get("id")
        asked = Request()
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            try:
                subs = [_subscription(str(name), market) for name in params]
            except ValueError as error:
                asked.replies.append(orjson.dumps({"error": {"code": 2, "msg": str(error)}, "id": request_id}))
                return asked
            (asked.subscribe if method == "SUBSCRIBE" else asked.unsubscribe).extend(subs)
            asked.replies.append(orjson.dumps({"result": None, "id": request_id}))
        elif method == "LIST_SUBSCRIPTIONS":
            asked.replies.append(orjson.dumps({"result": [], "id": request_id}))
        else:
            asked.replies.append(orjson.dumps({"error": {"code": 2, "msg": "Invalid request"}, "id": request_id}))
        return asked

    def trade_frames(self, sub: Subscription, trades: Sequence[Trade], now_ms: int) -> list[Frame]:
        return [
            orjson.dumps(
                {
                    "e": "trade",
                    "E": now_ms,
                    "s": sub.symbol_id,
                    "t": trade.id,
                    "p": trade.price,
                    "q": trade.qty,
                    "T": trade.time_ms,
                    "m": trade.is_buyer_maker,
                    "M": True,
                }
            )
            for trade in trades
        ]

    def ticker_frame(self, sub: Subscription, ticker: TickerSnapshot, now_ms: int) -> Frame:
        stats = ticker.trades
        if sub.name.endswith("@miniTicker"):
            return orjson.dumps(
                {
                    "e": "24hrMiniTicker",
                    "E": now_ms,
                    "s": sub.symbol_id,
                    "c": fmt8(ticker.last),
                    "o": fmt8(ticker.open),
                    "h": fmt8(ticker.high),
                    "l": fmt8(ticker.low),
                    "v": fmt8(ticker.volume),
                    "q": fmt8(ticker.quote_volume),
                }
            )
        return orjson.dumps(
            {
                "e": "24hrTicker",
                "E": now_ms,
                "s": sub.symbol_id,
                "p": fmt8(ticker.change),
                "P": f"{ticker.change_ratio() * 100:.3f}",
                "w": fmt8(ticker.weighted_average()),
                "x": fmt8(ticker.prev_close),
                "c": fmt8(ticker.last),
                "Q": stats.last.qty if stats.last is not None else fmt8(Decimal(0)),
                "b": fmt8(ticker.bid.price),
                "B": fmt8(ticker.bid.size),
                "a": fmt8(ticker.ask.price),
                "A": fmt8(ticker.ask.size),
                "o": fmt8(ticker.open),
                "h": fmt8(ticker.high),
                "l": fmt8(ticker.low),
                "v": fmt8(ticker.volume),
                "q": fmt8(ticker.quote_volume),
                "O": ticker.open_time,
                "C": ticker.close_time,
                "F": -1 if stats.first_id is None else stats.first_id,
                "L": -1 if stats.last_id is None else stats.last_id,
                "n": stats.count,
            }
        )

    def kline_frame(self, sub: Subscription, kline: Kline, closed: bool, now_ms: int) -> Frame:
        assert sub.interval is not None
        return orjson.dumps(
            {
                "e": "kline",
                "E": now_ms,
                "s": sub.symbol_id,
                "k": {
                    "t": kline.open_time,
                    "T": kline.close_time,
                    "s": sub.symbol_id,
                    "i": sub.interval.name,
                    "f": -1,
                    "L": -1,
                    "o": kline.open,
                    "c": kline.close,
                    "h": kline.high,
                    "l": kline.low,
                    "v": kline.volume,
                    "n": kline.trade_count,
                    "x": closed,
                    "q": kline.quote_volume,
                    "V": kline.taker_buy_base_volume,
                    "Q": kline.taker_buy_quote_volume,
                    "B": "0",
                },
            }
        )

    def book_frame(self, sub: Subscription, view: BookView, now_ms: int) -> Frame:
        return orjson.dumps(
            {
                "e": "depthUpdate",
                "E": now_ms,
                "s": sub.symbol_id,
                "U": view.first_id,
                "u": view.last_id,
                "b": [list(level) for level in view.bids],
                "a": [list(level) for level in view.asks],
            }
        )

    def sends_book_snapshot(self, sub: Subscription) -> bool:
        return False


def _subscription(name: str, market: Market) -> Subscription:
    symbol_part, _, stream = name.partition("@")
    symbol_id = _listed(symbol_part, market)
    if stream == "trade":
        return Subscription("trades", symbol_id, name=name)
    if stream in ("ticker", "miniTicker"):
        return Subscription("ticker", symbol_id, name=name)
    if stream.startswith("kline_"):
        interval = INTERVALS.get(stream.removeprefix("kline_"))
        if interval is None:
            raise ValueError(f"Invalid interval in {name}")
        return Subscription("ohlcv", symbol_id, interval=interval, name=name)
    if stream in ("depth", "depth@100ms", "depth@1000ms"):
        return Subscription("orderbook", symbol_id, name=name)
    raise ValueError(f"Unsupported stream {name}")


def _listed(lowercase: str, market: Market) -> str:
    for listing in market.listings():
        if listing.symbol_id.lower() == lowercase.lower():
            return listing.symbol_id
    raise ValueError(f"Invalid symbol {lowercase}")


VENUE = BinanceWs()
