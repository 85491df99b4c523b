"""Websocket frames as Binance, Bybit and Gate send them, through ccxt pro's own handlers, offline.

The frames are written from the exchanges' documented formats (and the samples in ccxt pro's
handler comments); the expected values are read off the frames by hand.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import ccxt
import pytest
from cryptoflow_native import (
    RecordedStream,
    ReplayError,
    StreamReplayError,
    candle_closed_flags,
    replay_stream,
    stream_trade_maker_sides,
)

BINANCE_URL = "wss://stream.binance.com:9443/ws/0"
BYBIT_URL = "wss://stream.bybit.com/v5/public/spot"
GATE_URL = "wss://api.gateio.ws/ws/v4/"


def spot_market(market_id: str, base: str, quote: str, **extra: Any) -> dict[str, Any]:
    """A spot market as ccxt loads one: its own defaults for every field the handlers may read."""
    market: dict[str, Any] = ccxt.Exchange().safe_market_structure(
        {
            "id": market_id,
            "symbol": f"{base}/{quote}",
            "base": base,
            "quote": quote,
            "baseId": base,
            "quoteId": quote,
            "type": "spot",
            "spot": True,
            "swap": False,
            "future": False,
            "option": False,
            "contract": False,
            "active": True,
            "precision": {"amount": 1e-8, "price": 0.01},
            **extra,
        }
    )
    return market


MARKETS = {
    "binance": {
        "BTC/USDT": spot_market("BTCUSDT", "BTC", "USDT", lowercaseId="btcusdt"),
        "ETH/USDT": spot_market("ETHUSDT", "ETH", "USDT", lowercaseId="ethusdt"),
    },
    "bybit": {"BTC/USDT": spot_market("BTCUSDT", "BTC", "USDT")},
    "gate": {"BTC/USDT": spot_market("BTC_USDT", "BTC", "USDT")},
}
URLS = {"binance": BINANCE_URL, "bybit": BYBIT_URL, "gate": GATE_URL}


def stream(exchange: str, method: str, frames: list[Any], *args: Any, url: str | None = None) -> RecordedStream:
    return RecordedStream(
        exchange_id=exchange,
        method=method,
        args=args or ("BTC/USDT",),
        frames=[frame if isinstance(frame, str) else json.dumps(frame) for frame in frames],
        url=url or URLS[exchange],
        markets=MARKETS[exchange],
    )


def binance_trade(trade_id: int, price: str, amount: str, ts: int, buyer_maker: bool, s: str = "BTCUSDT") -> Any:
    return {
        "e": "trade",
        "E": ts + 2,
        "s": s,
        "t": trade_id,
        "p": price,
        "q": amount,
        "T": ts,
        "m": buyer_maker,
        "M": True,
    }


def binance_kline(open_ms: int, o: str, h: str, low: str, c: str, v: str, closed: bool) -> Any:
    kline = {"t": open_ms, "T": open_ms + 59_999, "s": "BTCUSDT", "i": "1m", "f": 100, "L": 200}
    kline |= {
        "o": o,
        "c": c,
        "h": h,
        "l": low,
        "v": v,
        "n": 101,
        "x": closed,
        "q": "1.5",
        "V": "0.5",
        "Q": "0.7",
        "B": "0",
    }
    return {"e": "kline", "E": open_ms + 1_000, "s": "BTCUSDT", "k": kline}


def bybit_trade(trade_id: str, taker: str, amount: str, price: str, ts: int) -> Any:
    return {"T": ts, "s": "BTCUSDT", "S": taker, "v": amount, "p": price, "L": "PlusTick", "i": trade_id, "BT": False}


def bybit_kline(start: int, o: str, h: str, low: str, c: str, v: str, confirm: bool) -> Any:
    row = {"start": start, "end": start + 59_999, "interval": "1", "open": o, "close": c, "high": h, "low": low}
    row |= {"volume": v, "turnover": "100.5", "confirm": confirm, "timestamp": start + 30_000}
    return {"topic": "kline.1.BTCUSDT", "data": [row], "ts": start + 30_000, "type": "snapshot"}


def gate_trade(trade_id: int, side: str, amount: str, price: str, ms: str) -> Any:
    result = {"id": trade_id, "create_time": int(float(ms)) // 1000, "create_time_ms": ms, "side": side}
    result |= {"currency_pair": "BTC_USDT", "amount": amount, "price": price}
    return {
        "time": int(float(ms)) // 1000,
        "time_ms": int(float(ms)),
        "channel": "spot.trades",
        "event": "update",
        "result": result,
    }


def gate_candle(open_s: int, o: str, h: str, low: str, c: str, v: str, closed: bool | None) -> Any:
    result: dict[str, Any] = {
        "t": str(open_s),
        "v": v,
        "c": c,
        "h": h,
        "l": low,
        "o": o,
        "n": "1m_BTC_USDT",
        "a": "0.1",
    }
    if closed is not None:
        result["w"] = closed
    return {
        "time": open_s + 20,
        "time_ms": (open_s + 20) * 1000,
        "channel": "spot.candlesticks",
        "event": "update",
        "result": result,
    }


ACKS = {
    "binance": ['{"result":null,"id":1}'],
    "bybit": [
        '{"success":true,"ret_msg":"subscribe","conn_id":"2324d924-aa4d-45b0-a858-7b8be29ab52b","req_id":"10001","op":"subscribe"}',
        '{"success":true,"ret_msg":"pong","conn_id":"2324d924-aa4d-45b0-a858-7b8be29ab52b","req_id":"","op":"ping"}',
        '{"req_id":"2","op":"pong","args":["1757405570352"],"conn_id":"d266o6hqo29sqmnq4vk0-1yus1"}',
    ],
    "gate": [
        '{"time":1606292218,"time_ms":1606292218231,"id":1,"conn_id":"62f2c1dabbe186d7","channel":"spot.trades","event":"subscribe","payload":["BTC_USDT"],"result":{"status":"success"}}',
        '{"time":1606292218,"time_ms":1606292218232,"conn_id":"62f2c1dabbe186d7","channel":"spot.pong","event":"","result":null}',
    ],
}


def trade_fields(trade: dict[str, Any]) -> tuple[Any, ...]:
    return (trade["id"], trade["symbol"], trade["timestamp"], trade["side"], trade["price"], trade["amount"])


# --- trades ---------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [BINANCE_URL, "ws://127.0.0.1:1234/ws/0"])
def test_binance_trades_in_arrival_order_with_the_taker_side(url: str) -> None:
    frames = [
        *ACKS["binance"],
        binance_trade(12345, "16578.50", "0.001", 1672304486865, buyer_maker=True),
        binance_trade(12346, "16579.00", "0.250", 1672304486900, buyer_maker=False),
    ]
    trades = replay_stream(stream("binance", "watchTrades", frames, url=url))
    assert [trade_fields(t) for t in trades] == [
        ("12345", "BTC/USDT", 1672304486865, "sell", 16578.5, 0.001),
        ("12346", "BTC/USDT", 1672304486900, "buy", 16579.0, 0.25),
    ]
    assert trades[0]["info"]["t"] == 12345


def test_binance_trades_of_another_symbol_are_not_the_subscription_s() -> None:
    frames = [binance_trade(1, "100", "1", 1_000, True), binance_trade(2, "2000", "1", 1_001, True, s="ETHUSDT")]
    assert [t["id"] for t in replay_stream(stream("binance", "watchTrades", frames))] == ["1"]


def test_bybit_trades_every_row_of_a_frame() -> None:
    frames = [
        *ACKS["bybit"],
        {
            "topic": "publicTrade.BTCUSDT",
            "type": "snapshot",
            "ts": 1672304486868,
            "data": [
                bybit_trade("20f43950-d8dd-5b31-9112-a178eb6023af", "Buy", "0.001", "16578.50", 1672304486865),
                bybit_trade("20f43950-d8dd-5b31-9112-a178eb6023b0", "Sell", "0.002", "16578.00", 1672304486866),
            ],
        },
    ]
    trades = replay_stream(stream("bybit", "watchTrades", frames))
    assert [trade_fields(t) for t in trades] == [
        ("20f43950-d8dd-5b31-9112-a178eb6023af", "BTC/USDT", 1672304486865, "buy", 16578.5, 0.001),
        ("20f43950-d8dd-5b31-9112-a178eb6023b0", "BTC/USDT", 1672304486866, "sell", 16578.0, 0.002),
    ]


def test_gate_trades_with_the_millisecond_time() -> None:
    frames = [
        *ACKS["gate"],
        gate_trade(309143071, "sell", "16.47", "0.4705", "1606292218213.4578"),
        gate_trade(309143072, "buy", "1.5", "0.4710", "1606292219001"),
    ]
    trades = replay_stream(stream("gate", "watchTrades", frames))
    assert [trade_fields(t) for t in trades] == [
        ("309143071", "BTC/USDT", 1606292218213, "sell", 0.4705, 16.47),
        ("309143072", "BTC/USDT", 1606292219001, "buy", 0.471, 1.5),
    ]


def long_trade_stream(exchange: str, count: int) -> list[Any]:
    if exchange == "binance":
        return [binance_trade(n, "100.5", "0.01", 1_700_000_000_000 + n, n % 2 == 0) for n in range(count)]
    if exchange == "bybit":
        rows = [bybit_trade(f"id-{n}", "Buy", "0.01", "100.5", 1_700_000_000_000 + n) for n in range(count)]
        return [{"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": row["T"], "data": [row]} for row in rows]
    return [gate_trade(n, "buy", "0.01", "100.5", str(1_700_000_000_000 + n)) for n in range(count)]


@pytest.mark.parametrize("exchange", ["binance", "bybit", "gate"])
def test_two_thousand_trade_frames_give_two_thousand_trades(exchange: str) -> None:
    recorded = stream(exchange, "watchTrades", long_trade_stream(exchange, 2000))
    trades = replay_stream(recorded)
    assert len(trades) == 2000
    assert [t["timestamp"] for t in trades] == [1_700_000_000_000 + n for n in range(2000)]
    # Replaying again starts from nothing: no trade of the previous replay comes back.
    assert len(replay_stream(recorded)) == 2000


def test_a_bybit_frame_of_more_rows_than_ccxt_s_cache_keeps_loses_none() -> None:
    rows = [bybit_trade(f"id-{n}", "Sell", "0.01", "100.5", 1_700_000_000_000 + n) for n in range(1500)]
    frame = {"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": 1_700_000_001_500, "data": rows}
    assert len(replay_stream(stream("bybit", "watchTrades", [frame]))) == 1500


# --- candles --------------------------------------------------------------------------------


def test_binance_candle_updates_of_the_same_ts_keep_their_order() -> None:
    frames = [
        *ACKS["binance"],
        binance_kline(1672515780000, "0.0010", "0.0025", "0.0015", "0.0020", "1000", closed=False),
        binance_kline(1672515780000, "0.0010", "0.0030", "0.0015", "0.0028", "1500", closed=True),
        binance_kline(1672515840000, "0.0028", "0.0029", "0.0027", "0.0027", "10", closed=False),
    ]
    assert replay_stream(stream("binance", "watchOHLCV", frames, "BTC/USDT", "1m")) == [
        [1672515780000, 0.001, 0.0025, 0.0015, 0.002, 1000.0],
        [1672515780000, 0.001, 0.003, 0.0015, 0.0028, 1500.0],
        [1672515840000, 0.0028, 0.0029, 0.0027, 0.0027, 10.0],
    ]


def test_bybit_candle_updates() -> None:
    frames = [
        *ACKS["bybit"],
        bybit_kline(1672324800000, "16649.5", "16677", "16608", "16677", "2.081", confirm=False),
        bybit_kline(1672324800000, "16649.5", "16690", "16608", "16680.5", "3.5", confirm=True),
    ]
    assert replay_stream(stream("bybit", "watchOHLCV", frames, "BTC/USDT", "1m")) == [
        [1672324800000, 16649.5, 16677.0, 16608.0, 16677.0, 2.081],
        [1672324800000, 16649.5, 16690.0, 16608.0, 16680.5, 3.5],
    ]


def test_gate_candle_updates_with_the_open_time_in_milliseconds() -> None:
    frames = [
        *ACKS["gate"],
        gate_candle(1606292580, "19128.1", "19130", "19120", "19125", "2362.32035", closed=False),
        gate_candle(1606292580, "19128.1", "19140", "19120", "19139.5", "2400.5", closed=True),
        gate_candle(1606292640, "19139.5", "19139.5", "19139.5", "19139.5", "1", closed=None),
    ]
    # ccxt takes Gate's streamed `v` as the volume (the REST parse takes the base amount column).
    assert replay_stream(stream("gate", "watchOHLCV", frames, "BTC/USDT", "1m")) == [
        [1606292580000, 19128.1, 19130.0, 19120.0, 19125.0, 2362.32035],
        [1606292580000, 19128.1, 19140.0, 19120.0, 19139.5, 2400.5],
        [1606292640000, 19139.5, 19139.5, 19139.5, 19139.5, 1.0],
    ]


def test_candles_of_another_timeframe_are_not_the_subscription_s() -> None:
    frames = [binance_kline(1672515780000, "1", "1", "1", "1", "1", closed=False)]
    assert replay_stream(stream("binance", "watchOHLCV", frames, "BTC/USDT", "5m")) == []


def test_more_candles_than_ccxt_s_cache_keeps_lose_none() -> None:
    frames = [binance_kline(60_000 * n, "1", "2", "0.5", "1.5", str(n), closed=True) for n in range(1200)]
    candles = replay_stream(stream("binance", "watchOHLCV", frames, "BTC/USDT", "1m"))
    assert [c[0] for c in candles] == [60_000 * n for n in range(1200)]


# --- tickers --------------------------------------------------------------------------------


def ticker_fields(ticker: dict[str, Any]) -> tuple[Any, ...]:
    keys = ("symbol", "timestamp", "last", "bid", "ask", "high", "low", "baseVolume", "quoteVolume", "percentage")
    return tuple(ticker[key] for key in keys)


def binance_ticker(close_ms: int, last: str) -> Any:
    return {
        "e": "24hrTicker", "E": close_ms + 5, "s": "BTCUSDT", "p": "0.0015", "P": "250.00", "w": "0.0018",
        "x": "0.0009", "c": last, "Q": "10", "b": "0.0024", "B": "10", "a": "0.0026", "A": "100", "o": "0.0010",
        "h": "0.0025", "l": "0.0010", "v": "10000", "q": "18", "O": close_ms - 86_400_000, "C": close_ms,
        "F": 0, "L": 18150, "n": 18151,
    }  # fmt: skip


def test_binance_one_ticker_per_ticker_frame() -> None:
    frames = [*ACKS["binance"], binance_ticker(1672515782136, "0.0025"), binance_ticker(1672515783136, "0.0024")]
    tickers = replay_stream(stream("binance", "watchTicker", frames))
    assert [ticker_fields(t) for t in tickers] == [
        ("BTC/USDT", 1672515782136, 0.0025, 0.0024, 0.0026, 0.0025, 0.001, 10000.0, 18.0, 250.0),
        ("BTC/USDT", 1672515783136, 0.0024, 0.0024, 0.0026, 0.0025, 0.001, 10000.0, 18.0, 250.0),
    ]


def test_bybit_spot_ticker_takes_the_frame_time() -> None:
    data = {
        "symbol": "BTCUSDT", "lastPrice": "21109.77", "highPrice24h": "21426.99", "lowPrice24h": "20575",
        "prevPrice24h": "20704.93", "volume24h": "6780.866843", "turnover24h": "141946527.22907118",
        "price24hPcnt": "0.0196", "usdIndexPrice": "21120.2400136",
    }  # fmt: skip
    frame = {"topic": "tickers.BTCUSDT", "ts": 1673853746003, "type": "snapshot", "cs": 2588407389, "data": data}
    tickers = replay_stream(stream("bybit", "watchTicker", [*ACKS["bybit"], frame]))
    assert [ticker_fields(t) for t in tickers] == [
        ("BTC/USDT", 1673853746003, 21109.77, None, None, 21426.99, 20575.0, 6780.866843, 141946527.22907117, 1.96)
    ]
    assert tickers[0]["open"] == 20704.93


def test_gate_ticker_has_no_timestamp() -> None:
    result = {
        "currency_pair": "BTC_USDT", "last": "15743.4", "lowest_ask": "15744.4", "highest_bid": "15743.5",
        "change_percentage": "-1.8254", "base_volume": "9110.473081735", "quote_volume": "145082083.2535",
        "high_24h": "16280.9", "low_24h": "15468.5",
    }  # fmt: skip
    frame = {
        "time": 1669107766,
        "time_ms": 1669107766406,
        "channel": "spot.tickers",
        "event": "update",
        "result": result,
    }
    tickers = replay_stream(stream("gate", "watchTicker", [*ACKS["gate"], frame]))
    # ccxt's Gate handler sets no time: the spot.tickers result carries none.
    assert [ticker_fields(t) for t in tickers] == [
        ("BTC/USDT", None, 15743.4, 15743.5, 15744.4, 16280.9, 15468.5, 9110.473081735, 145082083.2535, -1.8254)
    ]


# --- what cannot be replayed ------------------------------------------------------------------


def test_an_unknown_method_or_exchange_raises() -> None:
    with pytest.raises(StreamReplayError, match="watchOrderBook"):
        replay_stream(stream("binance", "watchOrderBook", []))
    with pytest.raises(StreamReplayError, match="nosuchexchange"):
        replay_stream(RecordedStream("nosuchexchange", "watchTrades", ("BTC/USDT",), [], BINANCE_URL, {}))
    assert issubclass(StreamReplayError, ReplayError)


def test_a_truncated_frame_raises_naming_it() -> None:
    frames = [json.dumps(binance_trade(1, "100", "1", 1_000, True)), '{"e":"trade","s":"BTC']
    with pytest.raises(StreamReplayError, match="frame 1"):
        replay_stream(stream("binance", "watchTrades", frames))


def test_error_replies_give_nothing() -> None:
    refused = '{"error":{"code":2,"msg":"Invalid request: invalid stream"},"id":1}'
    gate_refused = '{"time":1739853211,"id":1,"channel":"spot.trades","event":"subscribe","error":{"code":2,"message":"unknown currency pair: X_USDT"},"result":{"status":"fail"}}'
    assert replay_stream(stream("binance", "watchTrades", [refused])) == []
    assert replay_stream(stream("gate", "watchTrades", [gate_refused])) == []


def test_replays_from_a_thread_without_an_event_loop() -> None:
    found: list[Any] = []
    frames = [binance_trade(7, "100", "1", 1_000, True)]
    worker = threading.Thread(target=lambda: found.extend(replay_stream(stream("binance", "watchTrades", frames))))
    worker.start()
    worker.join()
    assert [t["id"] for t in found] == ["7"]


# --- what the frames carry beyond ccxt's structures -------------------------------------------


def test_candle_closed_flags_last_frame_wins() -> None:
    binance = [
        binance_kline(60_000, "1", "1", "1", "1", "1", closed=False),
        binance_kline(60_000, "1", "1", "1", "1", "1", closed=True),
        binance_kline(120_000, "1", "1", "1", "1", "1", closed=False),
    ]
    flags = candle_closed_flags("binance", [*ACKS["binance"], *map(json.dumps, binance)])
    assert flags == {60_000: True, 120_000: False}
    bybit = [bybit_kline(60_000, "1", "1", "1", "1", "1", False), bybit_kline(60_000, "1", "1", "1", "1", "1", True)]
    assert candle_closed_flags("bybit", [*ACKS["bybit"], *map(json.dumps, bybit)]) == {60_000: True}
    gate = [gate_candle(60, "1", "1", "1", "1", "1", False), gate_candle(60, "1", "1", "1", "1", "1", True)]
    gate.append(gate_candle(120, "1", "1", "1", "1", "1", None))  # Gate may leave `w` out: no flag
    assert candle_closed_flags("gate", [*ACKS["gate"], *map(json.dumps, gate)]) == {60_000: True}
    assert candle_closed_flags("kraken", ["{}"]) == {}


def test_stream_trade_maker_sides() -> None:
    binance = [binance_trade(1, "1", "1", 1, buyer_maker=True), binance_trade(2, "1", "1", 2, buyer_maker=False)]
    binance.append(
        {"e": "aggTrade", "E": 3, "s": "BTCUSDT", "a": 26129, "p": "1", "q": "1", "f": 1, "l": 2, "T": 3, "m": True}
    )
    assert stream_trade_maker_sides("binance", [*ACKS["binance"], *map(json.dumps, binance)]) == {
        "1": "buy",
        "2": "sell",
        "26129": "buy",
    }
    # Bybit's `S` and Gate's `side` are the taker's: the maker is the other side.
    rows = [bybit_trade("a", "Buy", "1", "1", 1), bybit_trade("b", "Sell", "1", "1", 2)]
    bybit = {"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": 3, "data": rows}
    assert stream_trade_maker_sides("bybit", [*ACKS["bybit"], json.dumps(bybit)]) == {"a": "sell", "b": "buy"}
    gate = [gate_trade(309143071, "sell", "1", "1", "1000"), gate_trade(309143072, "buy", "1", "1", "2000")]
    assert stream_trade_maker_sides("gate", [*ACKS["gate"], *map(json.dumps, gate)]) == {
        "309143071": "buy",
        "309143072": "sell",
    }


def test_maker_sides_agree_with_ccxt_s_taker_side() -> None:
    """ccxt's streamed trade `side` is the taker's: the maker side read from the frame is its opposite."""
    for exchange in ("binance", "bybit", "gate"):
        frames = [json.dumps(f) for f in long_trade_stream(exchange, 4)]
        makers = stream_trade_maker_sides(exchange, frames)
        trades = replay_stream(stream(exchange, "watchTrades", frames))
        assert {t["id"]: {"buy": "sell", "sell": "buy"}[t["side"]] for t in trades} == makers
