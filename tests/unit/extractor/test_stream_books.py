"""Order-book frames as a sequence, per exchange, and what ends a book's connection, by reason."""

from __future__ import annotations

import ccxt
import orjson
import pytest
from cryptoflow_extractor.stream_books import BookSequence, BookStream, watch_limit
from cryptoflow_extractor.streaming import ResyncNeeded, StallError


def binance(first: int, last: int) -> str:
    return orjson.dumps({"e": "depthUpdate", "E": 1, "s": "BTCUSDT", "U": first, "u": last, "b": [], "a": []}).decode()


def bybit(kind: str, update_id: int) -> str:
    data = {"s": "BTCUSDT", "b": [], "a": [], "u": update_id, "seq": update_id * 4}
    return orjson.dumps({"topic": "orderbook.50.BTCUSDT", "type": kind, "ts": 1, "data": data}).decode()


def gate_obu(first: int | None, last: int, full: bool = False) -> str:
    result: dict[str, object] = {"t": 1, "s": "ob.BTC_USDT.50", "u": last, "b": [], "a": []}
    if full:
        result["full"] = True
    else:
        result["U"] = first
    return orjson.dumps({"time_ms": 1, "channel": "spot.obu", "event": "update", "result": result}).decode()


def seen(exchange: str, frames: list[str]) -> BookSequence:
    sequence = BookSequence(exchange)
    for frame in frames:
        sequence.see(frame)
    return sequence


def test_binance_deltas_must_follow_each_other() -> None:
    assert seen("binance", [binance(1, 4), binance(5, 8), binance(9, 12)]).broken is None
    broken = seen("binance", [binance(1, 4), binance(9, 12)])
    assert broken.broken == "update 9..12 after 4"
    assert seen("binance", [binance(5, 8), binance(1, 4)]).broken is not None  # out of order


def test_bybit_deltas_count_up_by_one_from_a_snapshot() -> None:
    assert seen("bybit", [bybit("snapshot", 10), bybit("delta", 11), bybit("delta", 12)]).broken is None
    assert seen("bybit", [bybit("snapshot", 10), bybit("delta", 12)]).broken == "update 12 after 10"
    assert seen("bybit", [bybit("delta", 11)]).broken == "delta 11 before any snapshot"
    # A new snapshot (u=1 after a service restart) starts the sequence over.
    assert (
        seen("bybit", [bybit("snapshot", 10), bybit("delta", 11), bybit("snapshot", 1), bybit("delta", 2)]).broken
        is None
    )


def test_gate_obu_starts_over_at_a_full_book() -> None:
    ok = [
        gate_obu(None, 8, full=True),
        gate_obu(9, 12),
        gate_obu(13, 16),
        gate_obu(None, 40, full=True),
        gate_obu(41, 44),
    ]
    assert seen("gate", ok).broken is None
    assert seen("gate", [gate_obu(None, 8, full=True), gate_obu(13, 16)]).broken == "update 13..16 after 8"


def test_frames_of_other_channels_are_not_read() -> None:
    sequence = seen("binance", ['{"e":"trade","t":1}', "pong", binance(1, 4)])
    assert (sequence.last_id, sequence.broken) == (4, None)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (ResyncNeeded("crossed"), "crossed"),
        (ResyncNeeded("sequence_gap", "update 9 after 4"), "sequence_gap"),
        (StallError("quiet"), "stall"),
        (ccxt.ChecksumError("binance"), "checksum"),
        (ccxt.InvalidNonce("gate"), "sequence_gap"),
        (ccxt.NetworkError("closed"), "reconnect"),
    ],
)
def test_every_end_of_a_book_connection_is_a_resync_counted_by_reason(error: Exception, reason: str) -> None:
    from cryptoflow_extractor.metrics import STREAM_RESYNCS

    job = BookStream.__new__(BookStream)
    job.session = type("S", (), {"exchange_id": "binance"})()  # type: ignore[assignment]
    job.symbol, job.resyncs = "BTC/USDT", 0
    before = STREAM_RESYNCS.labels("binance", "BTC/USDT", reason)._value.get()
    job.reconnect_reason(error)
    assert STREAM_RESYNCS.labels("binance", "BTC/USDT", reason)._value.get() == before + 1
    assert job.resyncs == 1


def test_bybit_books_are_asked_for_at_one_of_its_depths() -> None:
    assert [watch_limit("bybit", d) for d in (1, 20, 50, 51, 200, 500)] == [50, 50, 50, 200, 200, 1000]
    assert watch_limit("binance", 20) is None
