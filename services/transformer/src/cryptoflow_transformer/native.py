"""Bronze parsed from what the exchange sent: a snapshot's records come from its native responses.

From schema version 2 a RawSnapshot keeps every response body of the calls that made it
(`native`). Here each such snapshot's payload is derived again from those bodies with the current
ccxt (`cryptoflow_native.replay`), narrowed to what the snapshot covers: its candles and trades
between `first_ts` and `last_ts`, its book's top `request.limit` levels. The dataset modules then
check the records as they check a version 1 snapshot's payload (ccxt's result as it was when the
page was fetched). So a parser fix or a newer ccxt, replayed over the lake, changes silver.

A stream page (the extractor's stream mode: `request.mode` "stream") keeps one ccxt pro
subscription — `watchTrades`, `watchOHLCV`, `watchTicker` or `watchOrderBook` — with every
websocket text frame it received for the page (`method` "WS", `path` the socket's URL). Its
records are parsed again from the frames by ccxt pro's own handlers
(`cryptoflow_native.replay_stream`), as the REST path parses bodies:

* watchTrades: the page's trades are the frames' trades whose ids are in the payload it was
  published with (between `first_ts` and `last_ts`). The frames may carry more: a trade the
  stream delivered after REST had published it (the overlap of a connection's catch-up) travels
  in a frame of the page but belongs to the REST page. Maker sides are read from the frames.
* watchOHLCV: every update of the page's candles (between `first_ts` and `last_ts`); per open
  time the last update wins, the state the candle had when the page was published (forming, or
  closed: the snapshot's `final` says which). Binance's kline extras are read from the frames as
  they are from REST klines; Gate's volume is corrected to the base amount (below).
* watchTicker: the last ticker the frames give. (An exchange whose ticker frames are deltas —
  Bybit's contract tickers — merges each into the ticker before it; a page's first frames then
  merge into nothing the page holds. Spot tickers come whole in every frame.)
* watchOrderBook: the payload as published, not parsed again. A streamed book is the product of
  every delta since its sync (a REST snapshot or a snapshot frame, many pages back, and ccxt's
  and the extractor's sequence checks on every delta since); a page keeps only the deltas since
  the previous page, so the book cannot be rebuilt from the page alone. The frames are evidence;
  silver takes the checked top-of-book the extractor published, with its sequence number.

A bulk-archive page (`archiveKlines`, `cryptoflow_extractor.archive`) keeps its part of the
archive's CSV as stored in the zip: its candles are parsed again from those lines
(`cryptoflow_native.archives.kline_rows`: header row or not, ms or µs, Binance's extras), between
`first_ts` and `last_ts`. A trades or aggregate-trades archive page (`archiveTrades`,
`archiveAggTrades`) likewise: its trades (`cryptoflow_native.trade_archives.trade_records`: the
records the REST path makes of `/api/v3/historicalTrades`, maker side included) or its aggregates
(`agg_trade_records`), between `first_ts` and `last_ts`.

An aggregator page (`coingeckoMarkets`, `coinpaprikaTickers`: the extractor's aggregators.py)
keeps the provider's listing bodies: its coins are read again from them
(`cryptoflow_native.aggregators.market_records`). A price-history page (`coingeckoMarketChartRange`,
`coinpaprikaTickerHistory`) keeps one coin's history body: its points are read again from it, between
`first_ts` and `last_ts`, for the coin its request names. A candle page (`coingeckoOhlc`,
`coinpaprikaOhlcvHistorical`) likewise: its candles (open times between `first_ts` and `last_ts`,
the closed ones the extractor published; the body's forming candle lies beyond) are read again with
the request's parameters, which tell CoinGecko's timeframe.

A file page (`fileRows`, `cryptoflow ingest`) keeps its part of the user's file (CSV lines with
the header, or a Parquet file's rows as read): its records are read again by the mapping in the
page's request (`cryptoflow_native.files`).

One correction of ccxt's stream parse: Gate's `spot.candlesticks` push has `v`, documented by
Gate as the total volume (in the quote currency), and `a`, the base-currency amount. ccxt's
websocket parse takes `v` as the volume, its REST parse the base amount: where the frame has `a`,
the streamed candle's volume is `a`, so a candle streamed and the same candle polled give the same
silver row (`cryptoflow_native.stream_ohlcv_base_volumes`).
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import orjson
from cryptoflow_contracts import Dataset
from cryptoflow_native import (
    RecordedCall,
    RecordedStream,
    complete,
    ohlcv_extras,
    replay,
    replay_stream,
    stream_ohlcv_base_volumes,
    stream_ohlcv_extras,
    stream_trade_maker_sides,
    trade_maker_sides,
)
from cryptoflow_native.aggregators import (
    AGGREGATOR_METHODS,
    CANDLE_METHODS,
    HISTORY_METHODS,
    candle_records,
    history_points,
    market_records,
)
from cryptoflow_native.archives import ARCHIVE_KLINES_METHOD, kline_rows
from cryptoflow_native.files import CSV_BODY, FILE_ROWS_METHOD, FORMAT_HEADER, page_records
from cryptoflow_native.trade_archives import (
    ARCHIVE_AGG_TRADES_METHOD,
    ARCHIVE_TRADES_METHOD,
    agg_trade_records,
    trade_records,
)

log = logging.getLogger(__name__)

_NATIVE = b'"native":[{'
# The ccxt pro subscription of each dataset's stream pages.
STREAM_METHODS: Mapping[Dataset, str] = MappingProxyType(
    {
        Dataset.TRADES: "watchTrades",
        Dataset.OHLCV: "watchOHLCV",
        Dataset.TICKER: "watchTicker",
        Dataset.ORDERBOOK: "watchOrderBook",
    }
)


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
    if any(call.get("method") in STREAM_METHODS.values() for call in snapshot["native"]):
        return _payload_from_stream(snapshot)
    if any(call.get("method") == ARCHIVE_KLINES_METHOD for call in snapshot["native"]):
        return _payload_from_archive(snapshot)
    if any(call.get("method") in _TRADE_ARCHIVE_METHODS for call in snapshot["native"]):
        return _payload_from_trade_archive(snapshot)
    if any(call.get("method") == FILE_ROWS_METHOD for call in snapshot["native"]):
        return _payload_from_file(snapshot)
    if any(call.get("method") in AGGREGATOR_METHODS for call in snapshot["native"]):
        return _payload_from_aggregator(snapshot)
    if any(call.get("method") in HISTORY_METHODS for call in snapshot["native"]):
        return _payload_from_history(snapshot)
    if any(call.get("method") in CANDLE_METHODS for call in snapshot["native"]):
        return _payload_from_candles(snapshot)
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
        return _trades([t for result in results for t in result], maker_sides, first, last)
    if dataset is Dataset.ORDERBOOK:
        book = dict(results[-1])
        depth = snapshot.get("request", {}).get("limit")
        if isinstance(depth, int):
            book["bids"], book["asks"] = book["bids"][:depth], book["asks"][:depth]
        return book
    return results[-1]


def _payload_from_archive(snapshot: dict[str, Any]) -> Any:
    """A bulk-archive page: its part of the archive's CSV, parsed as the extractor parsed it."""
    first, last = snapshot.get("first_ts"), snapshot.get("last_ts")
    rows = [
        row
        for call in snapshot["native"]
        for response in call["responses"]
        for row in kline_rows(response["body"].encode())
    ]
    return [row for row in rows if _within(row[0], first, last)]


def _payload_from_trade_archive(snapshot: dict[str, Any]) -> Any:
    """A trades or aggregate-trades archive page: its part of the CSV, parsed as the extractor
    parsed it, between `first_ts` and `last_ts`."""
    first, last = snapshot.get("first_ts"), snapshot.get("last_ts")
    symbol = snapshot["symbol"]
    return [
        record
        for call in snapshot["native"]
        for response in call["responses"]
        for record in _TRADE_ARCHIVE_METHODS[call["method"]](response["body"].encode(), symbol)
        if _within(record["timestamp"], first, last)
    ]


_TRADE_ARCHIVE_METHODS = MappingProxyType(
    {ARCHIVE_TRADES_METHOD: trade_records, ARCHIVE_AGG_TRADES_METHOD: agg_trade_records}
)


def _payload_from_file(snapshot: dict[str, Any]) -> Any:
    """A file page (`cryptoflow ingest`): its rows read by the mapping in its request, values as
    text (the checks quarantine what does not parse, with the reason)."""
    mapping = snapshot.get("request", {}).get("mapping")
    if not isinstance(mapping, dict):
        raise ValueError("a file page's request carries the mapping that reads it")
    dataset = snapshot["dataset"]
    return [
        record
        for call in snapshot["native"]
        for response in call["responses"]
        for record in page_records(
            response["body"].encode(), response.get("headers", {}).get(FORMAT_HEADER, CSV_BODY), mapping, dataset
        )
    ]


def _payload_from_aggregator(snapshot: dict[str, Any]) -> Any:
    """An aggregator page: the coins of its listing responses, each as a market record."""
    return [
        record
        for call in snapshot["native"]
        for response in call["responses"]
        for record in market_records(call["method"], response["body"])
    ]


def _payload_from_history(snapshot: dict[str, Any]) -> Any:
    """An aggregator's price-history page: the points of its responses, each with the coin the
    page's request named, between `first_ts` and `last_ts`."""
    asset_id = snapshot.get("request", {}).get("asset_id")
    if not isinstance(asset_id, str):
        raise ValueError("a price-history page's request names its coin (asset_id)")
    first, last = snapshot.get("first_ts"), snapshot.get("last_ts")
    return [
        {"asset_id": asset_id, **point}
        for call in snapshot["native"]
        for response in call["responses"]
        for point in history_points(call["method"], response["body"])
        if not isinstance(point.get("ts"), int) or _within(point["ts"], first, last)
    ]


def _payload_from_candles(snapshot: dict[str, Any]) -> Any:
    """An aggregator's candle page: the candles of its responses (read with each response's request
    parameters), each with the coin the page's request named, opening between `first_ts` and `last_ts`."""
    asset_id = snapshot.get("request", {}).get("asset_id")
    if not isinstance(asset_id, str):
        raise ValueError("a candle page's request names its coin (asset_id)")
    first, last = snapshot.get("first_ts"), snapshot.get("last_ts")
    return [
        {"asset_id": asset_id, **candle}
        for call in snapshot["native"]
        for response in call["responses"]
        for candle in candle_records(call["method"], response["body"], response.get("params") or {})
        if not isinstance(candle.get("ts"), int) or _within(candle["ts"], first, last)
    ]


def _payload_from_stream(snapshot: dict[str, Any]) -> Any:
    """A stream page's records parsed from its frames (see the module docstring)."""
    dataset = Dataset(snapshot["dataset"])
    calls = snapshot["native"]
    method = STREAM_METHODS.get(dataset)
    if len(calls) != 1 or calls[0].get("method") != method:
        raise ValueError(f"a {dataset.value} stream page has one {method} subscription, not {len(calls)} call(s)")
    (call,) = calls
    if dataset is Dataset.ORDERBOOK:
        return snapshot.get("payload")  # the book as built from every delta since its sync
    exchange = snapshot["exchange"]
    frames = [response["body"] for response in call["responses"]]
    updates = complete(exchange, call["method"], _replayed(exchange, snapshot["symbol"], call))
    first, last = snapshot.get("first_ts"), snapshot.get("last_ts")
    if dataset is Dataset.TRADES:
        published = snapshot.get("payload")
        if not isinstance(published, list):
            raise ValueError("a trades stream page's payload lists the trades it was published with")
        ids = {str(t["id"]) for t in published if isinstance(t, dict) and t.get("id") is not None}
        mine = [t for t in updates if str(t.get("id")) in ids]
        return _trades(mine, stream_trade_maker_sides(exchange, frames), first, last)
    if dataset is Dataset.OHLCV:
        extras = stream_ohlcv_extras(exchange, frames)
        base_volumes = stream_ohlcv_base_volumes(exchange, frames)
        # In arrival order: a candle's last update is its state when the page was published.
        by_ts = {row[0]: row for row in updates if _within(row[0], first, last)}
        candles = []
        for ts in sorted(by_ts):
            candle = list(by_ts[ts][:6])
            if ts in base_volumes:
                candle[5] = base_volumes[ts]  # Gate: the base amount, as REST gives (module docstring)
            candles.append([*candle, *extras[ts]] if ts in extras else candle)
        return candles
    if not updates:
        raise ValueError("the ticker stream page's frames hold no ticker")
    return updates[-1]


def _replayed(exchange: str, symbol: str, call: dict[str, Any]) -> list[Any]:
    """ccxt pro's results for the call's frames, in arrival order. Frames of one socket are
    replayed together (a handler may keep state across them: Bybit merges a ticker delta into the
    ticker before it); a socket URL that changes means a new connection, which starts afresh."""
    market = call.get("market")
    results: list[Any] = []
    for url, responses in itertools.groupby(call["responses"], key=lambda response: response["path"]):
        recorded = RecordedStream(
            exchange_id=exchange,
            method=call["method"],
            args=call["args"],
            frames=[response["body"] for response in responses],
            url=url,
            markets={symbol: market} if market else {},
            options=call.get("options") or {},
        )
        results.extend(replay_stream(recorded))
    return results


def _trades(trades: list[Any], maker_sides: dict[str, str], first: int | None, last: int | None) -> list[Any]:
    """The trades between first and last, once each (by id, the last copy), with their maker
    side, in time order."""
    by_id = {t["id"]: t for t in trades if _within(t["timestamp"], first, last)}
    for trade in by_id.values():
        trade["maker_side"] = maker_sides.get(str(trade["id"]))
    return sorted(by_id.values(), key=lambda t: (t["timestamp"], str(t["id"])))


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
