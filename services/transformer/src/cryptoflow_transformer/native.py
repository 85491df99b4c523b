"""Bronze parsed from what the exchange sent: a snapshot's records come from its native responses.

From schema version 2 a RawSnapshot keeps every response body of the calls that made it
(`native`). Here each such snapshot's payload is derived again from those bodies with the current
ccxt (`cryptoflow_native.replay`), narrowed to what the snapshot covers: its candles and trades
between `first_ts` and `last_ts`, its book's top `request.limit` levels. The dataset modules then
check the records as they check a version 1 snapshot's payload (ccxt's result as it was when the
page was fetched). So a parser fix or a newer ccxt, replayed over the lake, changes silver.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import orjson
from cryptoflow_contracts import Dataset
from cryptoflow_native import RecordedCall, complete, ohlcv_extras, replay, trade_maker_sides

log = logging.getLogger(__name__)

_NATIVE = b'"native":[{'


def unified_bronze(ndjson: bytes) -> bytes:
    """The bronze NDJSON with each native snapshot's payload parsed from its responses; a
    snapshot whose responses cannot be parsed gets no payload (quarantined as malformed)."""
    if _NATIVE not in ndjson:
        return ndjson  # version 1 snapshots only: their payload is ccxt's result already
    lines = []
    for line in ndjson.splitlines():
        if _NATIVE not in line:
            lines.append(line)
            continue
        snapshot = orjson.loads(line)
        try:
            snapshot["payload"] = payload_from_native(snapshot)
        except Exception as exc:
            log.warning(
                "native responses could not be parsed",
                extra={"event_id": snapshot.get("event_id"), "error": repr(exc)[:500]},
            )
            snapshot["payload"] = None
        # The bodies are parsed: what follows reads the payload (and the bronze object keeps them).
        # Written back, they were most of the bytes encoded here and decoded again by Polars.
        del snapshot["native"]
        lines.append(orjson.dumps(snapshot))
    return b"\n".join(lines) + b"\n"


def payload_from_native(snapshot: dict[str, Any]) -> Any:
    """What the snapshot's calls return when their responses are parsed now, narrowed to the
    records the snapshot was published with."""
    exchange = snapshot["exchange"]
    calls = [_recorded(exchange, snapshot["symbol"], call) for call in snapshot["native"]]
    dataset = Dataset(snapshot["dataset"])
    # The exchange's own fields beyond ccxt's, read before ccxt sees (and may change) the bodies.
    bodies = [body for call in calls for body in call.bodies]
    extras = ohlcv_extras(exchange, bodies) if dataset is Dataset.OHLCV else {}
    maker_sides = trade_maker_sides(exchange, bodies) if dataset is Dataset.TRADES else {}
    results = [complete(exchange, call.method, replay(call)) for call in calls]
    first, last = snapshot.get("first_ts"), snapshot.get("last_ts")
    if dataset is Dataset.OHLCV:
        # Later calls first: a re-requested interval is recorded before the page it completes,
        # and the page's own candle wins (as when the extractor merged them).
        by_ts = {row[0]: row for result in results for row in result if _within(row[0], first, last)}
        # [ts, open, high, low, close, volume] and, where the exchange sends them, the extras.
        return [[*by_ts[ts][:6], *extras[ts]] if ts in extras else by_ts[ts] for ts in sorted(by_ts)]
    if dataset is Dataset.TRADES:
        by_id = {t["id"]: t for result in results for t in result if _within(t["timestamp"], first, last)}
        for trade in by_id.values():
            trade["maker_side"] = maker_sides.get(str(trade["id"]))
        return sorted(by_id.values(), key=lambda t: (t["timestamp"], str(t["id"])))
    if dataset is Dataset.ORDERBOOK:
        book = dict(results[-1])
        depth = snapshot.get("request", {}).get("limit")
        if isinstance(depth, int):
            book["bids"], book["asks"] = book["bids"][:depth], book["asks"][:depth]
        return book
    return results[-1]


def _recorded(exchange: str, symbol: str, call: dict[str, Any]) -> RecordedCall:
    market = call.get("market")
    return RecordedCall(
        exchange_id=exchange,
        method=call["method"],
        args=call["args"],
        # ccxt decodes bodies with the json module; so does the replay (big integers included).
        bodies=[json.loads(response["body"]) for response in call["responses"]],
        markets={symbol: market} if market else {},
        options=call.get("options") or {},
    )


def _within(ts: Any, first: int | None, last: int | None) -> bool:
    return isinstance(ts, int) and (first is None or ts >= first) and (last is None or ts <= last)
