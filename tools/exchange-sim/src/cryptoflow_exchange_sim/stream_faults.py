"""Websocket faults: which outgoing frames get a dropped connection, a stall, a gap or a swap.

A fault names a kind, an exchange (`*` for all) and a channel (`trades`, `ticker`, `ohlcv`,
`orderbook` or `*`). On the command line: `KIND:EXCHANGE.CHANNEL[:OPTION=VALUE,...]`, e.g.
`skip:binance.orderbook:after=20`; over HTTP: `POST /_sim/stream_faults` with
`{"kind": "skip", "exchange": "binance", "channel": "orderbook", "after": 20}` (or a list).

Kinds:
* `drop`: the connection is cut (no closing handshake) instead of sending the frame;
* `stall`: the frame and everything after it on that connection is withheld for `seconds`
  (default 30) while the connection stays open and answers pings: a silent feed;
* `skip`: that one frame is not sent (a book delta lost: a sequence gap);
* `reorder`: that frame is sent after the next one of the same connection;
* `corrupt`: that frame's prices (`p`, `price`) are sent as "garbage" (a malformed message);
* `cross`: the next book delta also sets a bid at the best ask's price (bad data: the book it
  builds is crossed, though its sequence is intact);
* `stale_snapshot`: the next REST order book answers lag `lag_ticks` ticks (default 30) behind
  the streams, so a client's buffered deltas are all newer than its snapshot (the snapshot "is
  not ready" when the deltas start); counted per REST answer, not per frame.

Each fault applies to `count` matching frames (default 1; `always`) after letting `after` pass.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Literal, get_args

StreamFaultKind = Literal["drop", "stall", "skip", "reorder", "corrupt", "cross", "stale_snapshot"]
# Applied where the data is made (the book feed, REST), not to outgoing frames.
_AT_SOURCE = frozenset({"cross", "stale_snapshot"})
STREAM_FAULT_KINDS: tuple[StreamFaultKind, ...] = get_args(StreamFaultKind)
_OPTIONS = frozenset({"count", "after", "seconds", "lag_ticks"})


@dataclass(frozen=True, slots=True)
class StreamFault:
    kind: StreamFaultKind
    exchange: str = "*"
    channel: str = "*"
    count: int | None = 1  # None: every matching frame
    after: int = 0
    seconds: float = 30.0
    lag_ticks: int = 30

    def __post_init__(self) -> None:
        if self.kind not in STREAM_FAULT_KINDS:
            raise ValueError(f"unknown stream fault {self.kind!r}; choose from {', '.join(STREAM_FAULT_KINDS)}")
        if self.count is not None and self.count < 1:
            raise ValueError("count must be at least 1 (or 'always')")
        if self.after < 0:
            raise ValueError("after must not be negative")
        if not (self.seconds > 0 and math.isfinite(self.seconds)):
            raise ValueError("seconds must be a positive number")
        if self.lag_ticks < 1:
            raise ValueError("lag_ticks must be at least 1")

    def matches(self, exchange: str, channel: str) -> bool:
        return self.exchange in ("*", exchange) and self.channel in ("*", channel)


class _Armed:
    def __init__(self, fault: StreamFault) -> None:
        self.fault = fault
        self.seen = 0
        self.used = 0

    def take(self) -> bool:
        """Count one matching frame; True when the fault applies to it."""
        self.seen += 1
        if self.seen <= self.fault.after:
            return False
        if self.fault.count is not None and self.used >= self.fault.count:
            return False
        self.used += 1
        return True

    def spent(self) -> bool:
        return self.fault.count is not None and self.used >= self.fault.count


class StreamFaultPlan:
    def __init__(self, faults: Iterable[StreamFault] = ()) -> None:
        self._armed = [_Armed(fault) for fault in faults]

    def add(self, faults: Iterable[StreamFault]) -> None:
        self._armed.extend(_Armed(fault) for fault in faults)

    def clear(self) -> None:
        self._armed.clear()

    def decide(self, exchange: str, channel: str) -> StreamFault | None:
        """The fault (if any) for the next outgoing frame of `exchange`'s `channel`."""
        for armed in self._armed:
            fault = armed.fault
            if fault.kind not in _AT_SOURCE and fault.matches(exchange, channel) and armed.take():
                return fault
        return None

    def take(self, kind: StreamFaultKind, exchange: str, channel: str) -> bool:
        """Whether a `kind` fault applies to this piece of `exchange`'s `channel` data."""
        for armed in self._armed:
            if armed.fault.kind == kind and armed.fault.matches(exchange, channel) and armed.take():
                return True
        return False

    def snapshot_lag(self) -> int:
        """Ticks the next REST order book answer lags behind (0: none)."""
        for armed in self._armed:
            if armed.fault.kind == "stale_snapshot" and armed.take():
                return armed.fault.lag_ticks
        return 0

    def snapshot(self) -> list[dict[str, object]]:
        return [{**asdict(armed.fault), "used": armed.used, "spent": armed.spent()} for armed in self._armed]


def stream_fault_from_json(item: Mapping[str, object]) -> StreamFault:
    unknown = set(item) - _OPTIONS - {"kind", "exchange", "channel"}
    if unknown:
        raise ValueError(f"unknown stream fault option(s) {sorted(unknown)}")
    count = item.get("count", 1)
    return StreamFault(
        kind=str(item.get("kind")),  # type: ignore[arg-type]  # checked in __post_init__
        exchange=str(item.get("exchange", "*")),
        channel=str(item.get("channel", "*")),
        count=None if count == "always" else int(count),  # type: ignore[call-overload]
        after=int(item.get("after", 0)),  # type: ignore[call-overload]
        seconds=float(item.get("seconds", 30.0)),  # type: ignore[arg-type]
        lag_ticks=int(item.get("lag_ticks", 30)),  # type: ignore[call-overload]
    )


def stream_faults_from_json(body: object) -> list[StreamFault]:
    if isinstance(body, Mapping) and "faults" in body:
        body = body["faults"]
    items = body if isinstance(body, list) else [body]
    faults = []
    for item in items:
        if not isinstance(item, Mapping):
            raise ValueError("a stream fault is a JSON object")
        faults.append(stream_fault_from_json(item))
    return faults


def parse_stream_fault_spec(spec: str) -> StreamFault:
    """`KIND:EXCHANGE.CHANNEL[:OPTION=VALUE,...]`, e.g. `stall:bybit.trades:seconds=30`."""
    kind, _, rest = spec.partition(":")
    target, _, options = rest.partition(":")
    exchange, _, channel = (target or "*").partition(".")
    item: dict[str, object] = {"kind": kind, "exchange": exchange or "*", "channel": channel or "*"}
    for option in filter(None, options.split(",")):
        key, _, value = option.partition("=")
        item[key.strip()] = value.strip()
    return stream_fault_from_json(item)
