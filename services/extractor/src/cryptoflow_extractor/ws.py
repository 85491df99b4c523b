"""One stream job's websocket connection: a ccxt pro instance that records every frame it receives.

Each stream job has its own ccxt pro instance, so its connection carries only its own
subscription: the frames it records are exactly its bronze (what the exchange sent), a resync or
reconnect touches that symbol alone, and closing it never disturbs another job (decision 0043).
The instance shares the markets the REST session loaded, so no job loads them again.

Frames are recorded as received, before ccxt's handler sees them, with the receive time and the
socket's URL: `take_frames` hands over those received since the last call (a page's bronze), and
`on_frame` lets a job read each frame first (the order books' sequence checks, `books.py`), and
`on_bad_frame` gets a frame ccxt's handler failed on (dead-lettered; the socket goes on).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import ccxt
import ccxt.pro
from cryptoflow_contracts import NativeCall, NativeResponse
from cryptoflow_native import json_safe

from .profiles import profile

# ccxt's caches hold the newest updates and a watch returns those since the last one; ours watches
# again as soon as one returns (streaming.Updates), so between two reads a cache takes only what
# the loop handled meanwhile (tens of updates): ccxt's own default, 1,000, is ample and bounded.
# At 100,000 every trade of a busy stream stayed alive, and the garbage collector's full passes
# over them grew to 100-270 ms pauses every ~10 s at 1k trades/s, most of LIVE's latency p99.
# A read that fills the cache may have lost its oldest updates: the trades job reconnects then, and
# REST fills from its cursor (stream_trades.CacheOverflow).
CACHE_LIMIT = 1_000


@dataclass(frozen=True, slots=True)
class Frame:
    received_ms: int
    url: str
    text: str


def _rehost(url: str, base_url: str) -> str:
    """The exchange's own path on the simulator's (or a proxy's) host; ws for http, wss for https."""
    parts = urlsplit(url)
    base = urlsplit(base_url)
    if parts.scheme in ("ws", "wss"):
        scheme = "wss" if base.scheme == "https" else "ws"
    else:
        scheme = base.scheme
    return urlunsplit((scheme, base.netloc, parts.path, parts.query, parts.fragment))


def _rehost_tree(value: Any, base_url: str) -> Any:
    if isinstance(value, str):
        return _rehost(value, base_url) if value.startswith(("http://", "https://", "ws://", "wss://")) else value
    if isinstance(value, dict):
        return {key: _rehost_tree(item, base_url) for key, item in value.items()}
    return value


class StreamClient:
    def __init__(
        self,
        exchange_id: str,
        base_url: str | None,
        markets: dict[str, Any],
        timeout_ms: int = 10_000,
    ) -> None:
        facts = profile(exchange_id)
        options = {key: copy.deepcopy(value) for key, value in facts.load_options.items()}
        options.update({"tradesLimit": CACHE_LIMIT, "OHLCVLimit": CACHE_LIMIT})
        cls = getattr(ccxt.pro, facts.ccxt_id)
        self.exchange_id = exchange_id
        self.options = dict(facts.load_options)
        self.exchange: Any = cls({"enableRateLimit": False, "timeout": timeout_ms, "options": options})
        if base_url is not None:
            self.exchange.urls["api"] = _rehost_tree(self.exchange.urls["api"], base_url)
        self.exchange.set_markets(list(markets.values()))
        self._frames: list[Frame] = []
        self.on_frame: Callable[[Frame], None] | None = None
        # A frame ccxt's handler raised on (a malformed message): ccxt's receive loop would die
        # with it and the socket go silent, so the error is caught here and handed over instead.
        self.on_bad_frame: Callable[[Frame, Exception], None] | None = None
        self.last_frame_ms: int | None = None
        self._record_frames()

    def _record_frames(self) -> None:
        exchange = self.exchange
        make_client = exchange.client

        def client(url: str) -> Any:
            made = make_client(url)
            if not getattr(made, "_cryptoflow_recorded", False):
                handle = made.handle_text_or_binary_message

                def recorded(data: Any) -> Any:
                    text = data if isinstance(data, str) else bytes(data).decode("utf-8", errors="replace")
                    frame = Frame(time.time_ns() // 1_000_000, made.url, text)
                    self._frames.append(frame)
                    self.last_frame_ms = frame.received_ms
                    if self.on_frame is not None:
                        self.on_frame(frame)
                    try:
                        return handle(data)
                    except Exception as exc:
                        if self.on_bad_frame is None:
                            raise
                        self.on_bad_frame(frame, exc)
                        return None

                made.handle_text_or_binary_message = recorded
                made._cryptoflow_recorded = True
            return made

        exchange.client = client

    def take_frames(self) -> list[Frame]:
        frames, self._frames = self._frames, []
        return frames

    def native(self, method: str, args: list[Any], symbol: str, frames: list[Frame]) -> NativeCall:
        """A page's bronze: the subscription and every frame it received for the page."""
        market = (self.exchange.markets or {}).get(symbol)
        return NativeCall(
            ccxt_version=ccxt.__version__,
            method=method,
            args=json_safe(args),
            market=json_safe(market) if market is not None else None,
            options=json_safe(self.options),
            responses=[
                NativeResponse(
                    method="WS",
                    path=frame.url,
                    headers={"received-ms": str(frame.received_ms)},
                    body=frame.text,
                )
                for frame in frames
            ],
        )

    async def close(self) -> None:
        await self.exchange.close()
