"""Stream pages (the extractor's stream mode) parsed again from their websocket frames.

Frames are written by hand in each exchange's documented format (Binance, Bybit, Gate); the
expected records are read off the frames. A page's records are what it was published with: its
trades by id, its candles' last updates, its last ticker, its book as published.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import ccxt
import orjson
import pytest
from cryptoflow_contracts import Dataset, NativeCall, NativeResponse, RawSnapshot
from cryptoflow_native import stream_ohlcv_base_volumes, stream_ohlcv_extras
from cryptoflow_transformer.native import payload_from_native, unified_bronze
from cryptoflow_transformer.ohlcv import check_ohlcv
from cryptoflow_transformer.order_books import check_order_books
from cryptoflow_transformer.tickers import check_tickers
from cryptoflow_transformer.trades import check_trades

T0 = 1_717_243_200_000  # 2024-06-01T12:00:00Z, a minute boundary
MINUTE = 60_000
URLS = {
    "binance": "ws://127.0.0.1:8080/ws/0",
    "bybit": "ws://127.0.0.1:8080/v5/public/spot",
    "gate": "ws://127.0.0.1:8080/ws/v4/",
}
MARKET_IDS = {"binance": "BTCUSDT", "bybit": "BTCUSDT", "gate": "BTC_USDT"}
ACKS = {
    "binance": '{"result":null,"id":1}',
    "bybit": '{"success":true,"ret_msg":"subscribe","conn_id":"c1","req_id":"1","op":"subscribe"}',
    "gate": '{"time":1717243200,"time_ms":1717243200000,"id":1,"conn_id":"c1","channel":"spot.trades",'
    '"event":"subscribe","payload":["BTC_USDT"],"result":{"status":"success"}}',
}
EXCHANGES = list(URLS)


def market(exchange: str) -> dict[str, Any]:
    extra = {"lowercaseId": "btcusdt"} if exchange == "binance" else {}
    found: dict[str, Any] = ccxt.Exchange().safe_market_structure(
        {
            "id": MARKET_IDS[exchange], "symbol": "BTC/USDT", "base": "BTC", "quote": "USDT", "baseId": "BTC",
            "quoteId": "USDT", "type": "spot", "spot": True, "swap": False, "future": False, "option": False,
            "contract": False, "active": True, "precision": {"amount": 1e-8, "price": 0.01}, **extra,
        }
    )  # fmt: skip
    return found


def page(
    exchange: str,
    dataset: Dataset,
    method: str,
    args: list[Any],
    frames: list[Any],
    payload: Any,
    *,
    first_ts: int,
    last_ts: int | None = None,
    final: bool = True,
    fetched_ms: int | None = None,
    request: dict[str, Any] | None = None,
) -> RawSnapshot:
    """A stream page as the extractor publishes one: its subscription, its frames, its payload."""
    texts = [frame if isinstance(frame, str) else json.dumps(frame) for frame in frames]
    return RawSnapshot(
        schema_version=2,
        native=[
            NativeCall(
                ccxt_version=ccxt.__version__,
                method=method,
                args=args,
                market=market(exchange),
                options={},
                responses=[
                    NativeResponse(method="WS", path=URLS[exchange], headers={"received-ms": str(T0)}, body=text)
                    for text in texts
                ],
            )
        ],
        dataset=dataset,
        exchange=exchange,
        symbol="BTC/USDT",
        timeframe=args[1] if method == "watchOHLCV" else None,
        fetched_at=datetime.fromtimestamp((fetched_ms or T0 + 10 * MINUTE) / 1000, UTC),
        request={"symbol": "BTC/USDT", "mode": "stream", **(request or {})},
        payload=payload,
        first_ts=first_ts,
        last_ts=last_ts if last_ts is not None else first_ts,
        final=final,
    )


def parsed(snapshot: RawSnapshot) -> Any:
    return payload_from_native(orjson.loads(snapshot.to_json()))


def bronze(*snapshots: RawSnapshot) -> bytes:
    return unified_bronze(b"".join(s.to_json() + b"\n" for s in snapshots))


# --- trades ---------------------------------------------------------------------------------------


def trade_frame(exchange: str, trade_id: int, taker: str, price: str, amount: str, ts: int) -> Any:
    if exchange == "binance":
        return {"e": "trade", "E": ts + 1, "s": "BTCUSDT", "t": trade_id, "p": price, "q": amount, "T": ts,
                "m": taker == "sell", "M": True}  # fmt: skip
    if exchange == "bybit":
        row = {"T": ts, "s": "BTCUSDT", "S": taker.capitalize(), "v": amount, "p": price, "L": "PlusTick",
               "i": str(trade_id), "BT": False}  # fmt: skip
        return {"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": ts + 1, "data": [row]}
    result = {"id": trade_id, "create_time": ts // 1000, "create_time_ms": f"{ts}.123", "side": taker,
              "currency_pair": "BTC_USDT", "amount": amount, "price": price}  # fmt: skip
    return {"time": ts // 1000, "time_ms": ts, "channel": "spot.trades", "event": "update", "result": result}


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_a_trades_page_is_the_frames_trades_it_was_published_with(exchange: str) -> None:
    # Trade 100 reached RAW in a REST page; the stream delivered it too, in the page's first frame.
    trades = [(100, "buy", "70000.5", "0.1", T0), (101, "sell", "70000.0", "0.25", T0 + 5),
              (102, "buy", "70001.0", "0.5", T0 + 5), (103, "sell", "69999.5", "1.5", T0 + 9)]  # fmt: skip
    frames = [ACKS[exchange], *(trade_frame(exchange, *t) for t in trades)]
    # What the extractor published: ccxt's trades (only their ids and times matter here).
    published = [{"id": str(i), "timestamp": ts, "symbol": "BTC/USDT"} for i, _, _, _, ts in trades[1:]]
    snapshot = page(exchange, Dataset.TRADES, "watchTrades", ["BTC/USDT"], frames, published,
                    first_ts=T0 + 5, last_ts=T0 + 9)  # fmt: skip
    records = parsed(snapshot)
    assert [(t["id"], t["timestamp"], t["side"], t["price"], t["amount"]) for t in records] == [
        ("101", T0 + 5, "sell", 70000.0, 0.25),
        ("102", T0 + 5, "buy", 70001.0, 0.5),
        ("103", T0 + 9, "sell", 69999.5, 1.5),
    ]
    # The maker side, from the frames: the taker's opposite (Binance states it as `m`).
    assert [t["maker_side"] for t in records] == ["buy", "sell", "buy"]
    assert all(t["symbol"] == "BTC/USDT" and "info" in t for t in records)  # ccxt's unified trades

    silver = check_trades(bronze(snapshot))
    assert silver.rejected.height == 0
    assert silver.good.select("trade_id", "maker_side").rows() == [("101", "buy"), ("102", "sell"), ("103", "buy")]


def test_a_trade_outside_the_page_s_times_is_not_the_page_s() -> None:
    frames = [trade_frame("binance", 7, "buy", "1.5", "1", T0), trade_frame("binance", 8, "buy", "1.5", "1", T0 + 60)]
    published = [{"id": "7", "timestamp": T0}, {"id": "8", "timestamp": T0 + 60}]
    snapshot = page("binance", Dataset.TRADES, "watchTrades", ["BTC/USDT"], frames, published, first_ts=T0)
    assert [t["id"] for t in parsed(snapshot)] == ["7"]


# --- candles --------------------------------------------------------------------------------------


def candle_frame(exchange: str, open_ms: int, ohlcv: tuple[str, ...], closed: bool, **extra: Any) -> Any:
    o, h, low, c, v = ohlcv
    if exchange == "binance":
        kline = {"t": open_ms, "T": open_ms + MINUTE - 1, "s": "BTCUSDT", "i": "1m", "f": 1, "L": 9,
                 "o": o, "c": c, "h": h, "l": low, "v": v, "x": closed, "B": "0", **extra}  # fmt: skip
        return {"e": "kline", "E": open_ms + 1_000, "s": "BTCUSDT", "k": kline}
    if exchange == "bybit":
        row = {"start": open_ms, "end": open_ms + MINUTE - 1, "interval": "1", "open": o, "close": c, "high": h,
               "low": low, "volume": v, "turnover": "9.5", "confirm": closed, "timestamp": open_ms + 1_000}  # fmt: skip
        return {"topic": "kline.1.BTCUSDT", "data": [row], "ts": open_ms + 1_000, "type": "snapshot"}
    result = {"t": str(open_ms // 1000), "v": v, "c": c, "h": h, "l": low, "o": o, "n": "1m_BTC_USDT",
              "w": closed, **extra}  # fmt: skip
    return {"time": open_ms // 1000 + 1, "time_ms": open_ms + 1_000, "channel": "spot.candlesticks",
            "event": "update", "result": result}  # fmt: skip


FORMING = ("100", "101", "99", "100.5", "2")
CLOSED = ("100", "102", "98", "101.5", "3")
NEXT = ("101.5", "101.5", "101.5", "101.5", "0.1")
# Per update: Binance's kline extras (k.q, k.n, k.V, k.Q) and Gate's base amount (`a`; `v` is the
# quote volume), each differing from one update to the next.
EXTRA: dict[str, list[dict[str, Any]]] = {
    "binance": [{"q": "200.5", "n": 4, "V": "1", "Q": "100.25"}, {"q": "301", "n": 6, "V": "1.5", "Q": "150.5"},
                {"q": "10.15", "n": 1, "V": "0.1", "Q": "10.15"}],
    "bybit": [{}, {}, {}],
    "gate": [{"a": "0.02"}, {"a": "0.03"}, {"a": "0.001"}],
}  # fmt: skip
# The closed candle as its REST kline gives it: the base volume, and Binance's extras.
EXPECTED_CLOSED = {
    "binance": [T0, 100.0, 102.0, 98.0, 101.5, 3.0, 301.0, 6, 1.5, 150.5],
    "bybit": [T0, 100.0, 102.0, 98.0, 101.5, 3.0],
    "gate": [T0, 100.0, 102.0, 98.0, 101.5, 0.03],
}


def candle_updates(exchange: str) -> list[Any]:
    """The candle forming, closing, and the next one beginning."""
    forming, closed, following = EXTRA[exchange]
    return [
        ACKS[exchange],
        candle_frame(exchange, T0, FORMING, False, **forming),
        candle_frame(exchange, T0, CLOSED, True, **closed),
        candle_frame(exchange, T0 + MINUTE, NEXT, False, **following),
    ]


def candle_page(exchange: str, frames: list[Any], payload: list[Any], final: bool, fetched_ms: int) -> RawSnapshot:
    return page(exchange, Dataset.OHLCV, "watchOHLCV", ["BTC/USDT", "1m"], frames, payload, first_ts=payload[0][0],
                final=final, fetched_ms=fetched_ms, request={"timeframe": "1m"})  # fmt: skip


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_a_candle_page_is_its_candle_s_last_update_with_the_kline_extras(exchange: str) -> None:
    # The page of the closed candle: its frames hold its forming update too, and the next candle's first.
    snapshot = candle_page(exchange, candle_updates(exchange), [[T0, 100, 102, 98, 101.5, 3]], True, T0 + MINUTE)
    assert parsed(snapshot) == [EXPECTED_CLOSED[exchange]]


def test_gate_s_streamed_volume_is_the_base_amount_only_where_the_frame_has_it() -> None:
    frames = [json.dumps(candle_frame("gate", T0, CLOSED, True))]  # no `a`: ccxt's `v` stays
    assert stream_ohlcv_base_volumes("gate", frames) == {}
    snapshot = candle_page("gate", frames, [[T0, 100, 102, 98, 101.5, 3]], True, T0 + MINUTE)
    assert parsed(snapshot) == [[T0, 100.0, 102.0, 98.0, 101.5, 3.0]]
    # The last frame of a ts decides: one without `a` after one with it leaves ccxt's volume.
    frames.insert(0, json.dumps(candle_frame("gate", T0, FORMING, False, a="0.02")))
    assert stream_ohlcv_base_volumes("gate", frames) == {}
    assert stream_ohlcv_base_volumes("gate", frames[:1]) == {T0: 0.02}


def test_stream_kline_extras_are_binance_s_only() -> None:
    frames = [json.dumps(frame) for frame in candle_updates("binance")[1:]]
    assert stream_ohlcv_extras("binance", frames) == {T0: (301.0, 6, 1.5, 150.5), T0 + MINUTE: (10.15, 1, 0.1, 10.15)}
    assert stream_ohlcv_extras("bybit", [json.dumps(frame) for frame in candle_updates("bybit")[1:]]) == {}
    bare = candle_frame("binance", T0, CLOSED, True)  # a kline without the extras
    assert stream_ohlcv_extras("binance", [json.dumps(bare)]) == {}


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_a_forming_candle_is_silver_not_final_and_the_closed_one_replaces_it(exchange: str) -> None:
    updates = candle_updates(exchange)
    forming = candle_page(exchange, updates[:2], [[T0, 100, 101, 99, 100.5, 2]], False, T0 + 30_000)
    closed = candle_page(exchange, updates[2:3], [[T0, 100, 102, 98, 101.5, 3]], True, T0 + MINUTE)
    only_forming = check_ohlcv(bronze(forming))
    assert only_forming.good.select("close", "final").rows() == [(100.5, False)]
    expected = EXPECTED_CLOSED[exchange]
    # Whatever the fetch order (a forming page fetched after the closed one is older news).
    for pages in ([forming, closed], [closed, forming]):
        checked = check_ohlcv(bronze(*pages))
        row = checked.good.row(0, named=True)
        assert checked.good.height == 1 and checked.duplicates == 1
        assert (row["close"], row["volume"], row["final"]) == (101.5, expected[5], True)
        assert row["source_event_id"] == closed.event_id
    late = candle_page(exchange, updates[:2], [[T0, 100, 101, 99, 100.5, 2]], False, T0 + 2 * MINUTE)
    assert check_ohlcv(bronze(closed, late)).good.select("close", "final").rows() == [(101.5, True)]


# --- tickers --------------------------------------------------------------------------------------


def ticker_frame(exchange: str, ts: int, last: str) -> Any:
    if exchange == "binance":
        return {"e": "24hrTicker", "E": ts, "s": "BTCUSDT", "p": "1", "P": "0.1", "w": "70000", "x": "69999",
                "c": last, "Q": "0.1", "b": "69990", "B": "1", "a": "70010", "A": "1", "o": "69000", "h": "71000",
                "l": "68000", "v": "100", "q": "7000000", "O": ts - 86_400_000, "C": ts, "F": 1, "L": 2, "n": 2}  # fmt: skip
    if exchange == "bybit":
        data = {"symbol": "BTCUSDT", "lastPrice": last, "highPrice24h": "71000", "lowPrice24h": "68000",
                "prevPrice24h": "69000", "volume24h": "100", "turnover24h": "7000000", "price24hPcnt": "0.01",
                "usdIndexPrice": "70000"}  # fmt: skip
        return {"topic": "tickers.BTCUSDT", "ts": ts, "type": "snapshot", "cs": 1, "data": data}
    result = {"currency_pair": "BTC_USDT", "last": last, "lowest_ask": "70010", "highest_bid": "69990",
              "change_percentage": "1", "base_volume": "100", "quote_volume": "7000000", "high_24h": "71000",
              "low_24h": "68000"}  # fmt: skip
    return {"time": ts // 1000, "time_ms": ts, "channel": "spot.tickers", "event": "update", "result": result}


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_a_ticker_page_is_the_last_ticker_of_its_frames(exchange: str) -> None:
    frames = [ACKS[exchange], ticker_frame(exchange, T0 + 1_000, "70000"), ticker_frame(exchange, T0 + 2_000, "70005")]
    published = {"symbol": "BTC/USDT", "timestamp": T0 + 2_000, "last": 70005.0}
    snapshot = page(exchange, Dataset.TICKER, "watchTicker", ["BTC/USDT"], frames, published, first_ts=T0 + 2_000)
    ticker = parsed(snapshot)
    assert (ticker["symbol"], ticker["last"], ticker["high"], ticker["baseVolume"]) == ("BTC/USDT", 70005.0, 71000.0,
                                                                                        100.0)  # fmt: skip
    # Gate's ticker push carries no time: silver takes the page's.
    assert ticker["timestamp"] == (None if exchange == "gate" else T0 + 2_000)
    silver = check_tickers(bronze(snapshot))
    assert silver.good.select(silver.good["ts"].dt.epoch("ms"), "last").rows() == [(T0 + 2_000, 70005.0)]


def test_a_ticker_page_without_a_ticker_is_malformed() -> None:
    snapshot = page("binance", Dataset.TICKER, "watchTicker", ["BTC/USDT"], [ACKS["binance"]], {"last": 1.0},
                    first_ts=T0)  # fmt: skip
    with pytest.raises(ValueError, match="no ticker"):
        parsed(snapshot)
    assert check_tickers(bronze(snapshot)).rejected["reason"].to_list() == ["malformed_ticker"]


# --- order books ----------------------------------------------------------------------------------


def book_delta(exchange: str, first: int, last: int) -> Any:
    if exchange == "binance":
        return {"e": "depthUpdate", "E": T0, "s": "BTCUSDT", "U": first, "u": last, "b": [["69990", "2"]], "a": []}
    if exchange == "bybit":
        return {"topic": "orderbook.50.BTCUSDT", "type": "delta", "ts": T0, "data": {"s": "BTCUSDT", "b": [],
                "a": [["70010", "0"]], "u": last, "seq": last}}  # fmt: skip
    return {"time_ms": T0, "channel": "spot.obu", "event": "update",
            "result": {"t": T0, "s": "ob.BTC_USDT.50", "U": first, "u": last, "b": [["69990", "2"]]}}  # fmt: skip


@pytest.mark.parametrize("exchange", EXCHANGES)
@pytest.mark.parametrize("resynced", [False, True])
def test_a_book_page_is_the_book_it_was_published_with(exchange: str, resynced: bool) -> None:
    """The frames are the deltas since the previous page: evidence, not the book (module docstring)."""
    book = {"symbol": "BTC/USDT", "bids": [[69990.0, 2.0], [69980.0, 1.0]], "asks": [[70010.0, 0.5]],
            "timestamp": T0 + 500, "datetime": "2024-06-01T12:00:00.500Z", "nonce": 9_000_000_123,
            "resynced": resynced}  # fmt: skip
    frames = [book_delta(exchange, 9_000_000_101, 9_000_000_110), book_delta(exchange, 9_000_000_111, 9_000_000_123)]
    snapshot = page(exchange, Dataset.ORDERBOOK, "watchOrderBook", ["BTC/USDT", 2], frames, book, first_ts=T0 + 500,
                    request={"limit": 2})  # fmt: skip
    assert parsed(snapshot) == book
    silver = check_order_books(bronze(snapshot))
    assert silver.rejected.height == 0
    assert silver.good.select("side", "level", "price", "sequence", "resynced").rows() == [
        ("ask", 0, 70010.0, 9_000_000_123, resynced),
        ("bid", 0, 69990.0, 9_000_000_123, resynced),
        ("bid", 1, 69980.0, 9_000_000_123, resynced),
    ]


def test_a_stream_page_of_another_dataset_s_method_is_malformed() -> None:
    snapshot = page("binance", Dataset.TRADES, "watchTicker", ["BTC/USDT"], [], [], first_ts=T0)
    with pytest.raises(ValueError, match="watchTrades"):
        parsed(snapshot)
