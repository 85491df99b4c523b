"""Order books over the exchange's websocket: snapshot plus deltas, checked, never published wrong.

ccxt pro keeps the book (Binance: REST snapshot, buffered deltas, `U`/`u`; Bybit: snapshot and
delta frames with `u`; Gate: `spot.obu`, a full book then `U`/`u` deltas). It checks Binance's
sequence itself, Bybit's and Gate's not (it drops Gate's stale deltas but applies one after a lost
one), so every frame is also read here before ccxt handles it (`BookSequence`): an update id that
does not follow the previous one, or a delta before any snapshot, is a gap. A gap,
an error ccxt raises (its sequence or checksum checks), a crossed book or a stall makes the job
throw the book away and sync it again on a new connection: that symbol only, counted in
`cryptoflow_extractor_stream_resyncs_total{reason}` and logged.

Published: every update's top `depth` levels to LIVE; to RAW a top-`depth` snapshot every
`publish_interval_s` and at once after a resync (`resynced: true`), with the exchange's sequence
number (`nonce`) and the frames received since the previous one.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

import ccxt
import orjson
from cryptoflow_contracts import Dataset, RawSnapshot

from .metrics import SNAPSHOTS_PUBLISHED, STREAM_RESYNCS
from .session import ExchangeSession
from .streaming import ResyncNeeded, StallError, StreamJob, Updates
from .ws import Frame, StreamClient

log = logging.getLogger(__name__)


# A frame without one of these is not a book frame (trades, pongs): not parsed twice.
_BOOK_WORDS = ("depthUpdate", "orderbook.", "spot.order_book_update", "spot.obu")


class BookSequence:
    """An exchange's book frames as a sequence: the last update id, and the first break in it."""

    def __init__(self, exchange_id: str) -> None:
        self.exchange_id = exchange_id
        self.last_id: int | None = None
        self.broken: str | None = None

    def see(self, text: str) -> None:
        if self.broken is not None or not any(word in text for word in _BOOK_WORDS):
            return
        try:
            message = orjson.loads(text)
        except orjson.JSONDecodeError:
            return  # not ours to judge: ccxt rejects what it cannot parse
        if not isinstance(message, dict):
            return
        if self.exchange_id == "bybit":
            self._bybit(message)
        elif _full_book(message):
            self.last_id = _int((message.get("result") or {}).get("u"))  # Gate's spot.obu starts over
        else:
            self._first_last(_first_last_ids(message))

    def _first_last(self, ids: tuple[int, int] | None) -> None:
        if ids is None:
            return
        first, last = ids
        if self.last_id is not None and first != self.last_id + 1:
            self.broken = f"update {first}..{last} after {self.last_id}"
        self.last_id = last

    def _bybit(self, message: dict[str, Any]) -> None:
        if not str(message.get("topic", "")).startswith("orderbook."):
            return
        data = message.get("data") or {}
        update_id = data.get("u")
        if not isinstance(update_id, int):
            return
        if message.get("type") == "snapshot":
            self.last_id = update_id  # a snapshot starts the sequence over (u=1: the service restarted)
            return
        if self.last_id is None:
            self.broken = f"delta {update_id} before any snapshot"
        elif update_id != self.last_id + 1:
            self.broken = f"update {update_id} after {self.last_id}"
        self.last_id = update_id


def _full_book(message: dict[str, Any]) -> bool:
    result = message.get("result")
    return message.get("channel") == "spot.obu" and isinstance(result, dict) and result.get("full") is True


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) else None


def _first_last_ids(message: dict[str, Any]) -> tuple[int, int] | None:
    """`U`/`u` of a Binance depthUpdate or a Gate spot.order_book_update / spot.obu frame."""
    body = message
    if message.get("e") != "depthUpdate":
        channel = message.get("channel")
        if channel not in ("spot.order_book_update", "spot.obu") or message.get("event") != "update":
            return None
        body = message.get("result") or {}
    first, last = body.get("U"), body.get("u")
    if isinstance(first, int) and isinstance(last, int):
        return first, last
    return None


def watch_limit(exchange_id: str, depth: int) -> int | None:
    """The book size asked of ccxt: Bybit's topics come in fixed depths; the others' defaults suffice."""
    if exchange_id == "bybit":
        return next(size for size in (50, 200, 1000) if size >= depth) if depth <= 1000 else 1000
    return None


class BookStream(StreamJob):
    dataset = Dataset.ORDERBOOK

    def __init__(
        self, session: ExchangeSession, symbol: str, depth: int, publish_interval_s: float, stall_after_s: float
    ) -> None:
        super().__init__(session, symbol, stall_after_s)
        self.depth = depth
        self.publish_interval_s = publish_interval_s
        self.sequence = BookSequence(session.exchange_id)
        self.resyncs = 0
        self.frame_checks.append(lambda frame: self.sequence.see(frame.text))

    def reconnect_reason(self, exc: Exception) -> str:
        reason = super().reconnect_reason(exc)
        if isinstance(exc, ResyncNeeded):
            kind = exc.reason
        elif isinstance(exc, StallError):
            kind = "stall"
        elif isinstance(exc, ccxt.ChecksumError):
            kind = "checksum"  # ccxt's name for Binance's and Gate's broken sequences too
        elif isinstance(exc, ccxt.InvalidNonce):
            kind = "sequence_gap"
        else:
            kind = "reconnect"
        self.resyncs += 1
        STREAM_RESYNCS.labels(self.exchange_id, self.symbol, kind).inc()
        return reason

    async def connected(self, client: StreamClient) -> None:
        self.sequence = BookSequence(self.exchange_id)
        limit = watch_limit(self.exchange_id, self.depth)
        updates = Updates(client, lambda: client.exchange.watch_order_book(self.symbol, limit))
        resynced = self.connections > 1  # every book after the first connection's is a resync
        frames: list[Frame] = []
        last_published = 0.0
        try:
            while True:
                book, received = await updates.next_or_stall(self.stall_after_s, "book update")
                frames.extend(received)
                if self.sequence.broken is not None:
                    raise ResyncNeeded("sequence_gap", self.sequence.broken)
                top = self._top(book)
                if top["bids"] and top["asks"] and top["bids"][0][0] >= top["asks"][0][0]:
                    raise ResyncNeeded("crossed", f"best bid {top['bids'][0][0]} >= best ask {top['asks'][0][0]}")
                top["resynced"] = resynced
                await self.publish_live(top, top["timestamp"])
                if resynced or time.monotonic() - last_published >= self.publish_interval_s:
                    await self._publish(client, top, frames)
                    frames, resynced, last_published = [], False, time.monotonic()
        finally:
            await updates.close()

    def _top(self, book: Any) -> dict[str, Any]:
        nonce = book.get("nonce")
        if self.exchange_id == "bybit" or nonce is None:
            nonce = self.sequence.last_id  # ccxt keeps no sequence number for Bybit's books
        return {
            "symbol": self.symbol,
            "bids": [list(level[:2]) for level in book["bids"][: self.depth]],
            "asks": [list(level[:2]) for level in book["asks"][: self.depth]],
            "timestamp": book.get("timestamp"),
            "datetime": book.get("datetime"),
            "nonce": nonce,
        }

    async def _publish(self, client: StreamClient, top: dict[str, Any], frames: list[Frame]) -> None:
        # ccxt has no time for a book made of a REST snapshot alone (Binance's has none): ours then.
        ts = top["timestamp"] if isinstance(top["timestamp"], int) else time.time_ns() // 1_000_000
        snapshot = RawSnapshot(
            schema_version=2,
            native=[client.native("watchOrderBook", [self.symbol, self.depth], self.symbol, frames)],
            dataset=Dataset.ORDERBOOK,
            exchange=self.exchange_id,
            symbol=self.symbol,
            fetched_at=datetime.now(UTC),
            request={"symbol": self.symbol, "limit": self.depth, "mode": "stream"},
            payload=top,
            first_ts=ts,
            last_ts=ts,
            final=True,
        )
        await self.session.publisher.snapshot(snapshot)
        SNAPSHOTS_PUBLISHED.labels(self.exchange_id, self.symbol, Dataset.ORDERBOOK.value).inc()
