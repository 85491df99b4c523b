"""HTTP server exposing a market through exchanges' public spot REST endpoints.

Each exchange's routes are mounted under its own API prefixes (`/api/v3` and the root for
Binance, `/v5/market/...` for Bybit, `/api/v4` and the root for Gate); the three layouts do
not overlap, so one server can speak all three at once. Every request passes the fault plan
and is counted; `/_sim/...` is the control surface (never counted, never faulted):

* `GET /_sim/stats`: request counts per endpoint (`binance.ohlcv`) and per path, status counts,
  faults served, the recent request log (wall-clock `t_ms`), the fault plan, and per job
  (`binance.ohlcv BTCUSDT 1m`: endpoint, symbol, interval) the most requests it ever had in
  flight at once (`most_concurrent`; a `delay` fault widens the window);
  `DELETE /_sim/stats` resets the counters and the log;
* `GET /_sim/faults`; `POST /_sim/faults` adds faults (a fault object, a list, or
  `{"faults": [...]}`); `PUT /_sim/faults` replaces the plan; `DELETE /_sim/faults` clears it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http import HTTPStatus

import orjson
from aiohttp import web

from cryptoflow_exchange_sim import binance, binance_ws, bybit, bybit_ws, gate, gate_ws
from cryptoflow_exchange_sim.aggregators import Aggregators
from cryptoflow_exchange_sim.archives import ARCHIVE_ROUTES, ArchiveFaults, ArchiveTree, parse_archive_fault_spec
from cryptoflow_exchange_sim.fault_plan import Decision, Fault, FaultPlan, faults_from_json, mutate_records
from cryptoflow_exchange_sim.live import LiveMarket
from cryptoflow_exchange_sim.market import Market
from cryptoflow_exchange_sim.stream_faults import StreamFault, StreamFaultPlan, stream_faults_from_json
from cryptoflow_exchange_sim.streams import StreamContext, StreamStats, WsVenue, websocket_handler
from cryptoflow_exchange_sim.wire import Reply, Route, Venue, WireError, gateway_error

Clock = Callable[[], int]
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Kept for callers of the Binance-only simulator.
SPOT_API_PREFIX = binance.SPOT_API_PREFIX
VENUES: dict[str, Venue] = {venue.name: venue for venue in (binance.VENUE, bybit.VENUE, gate.VENUE)}
WS_VENUES: dict[str, WsVenue] = {venue.name: venue for venue in (binance_ws.VENUE, bybit_ws.VENUE, gate_ws.VENUE)}
EXCHANGES: tuple[str, ...] = tuple(VENUES)
LOG_SIZE = 2000
# A delayed answer must not hold a stopping server for long.
SHUTDOWN_TIMEOUT_S = 1.0


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class Stats:
    """What the simulator was asked and what it answered."""

    requests: Counter[str] = field(default_factory=Counter)
    paths: Counter[str] = field(default_factory=Counter)
    statuses: dict[str, Counter[str]] = field(default_factory=dict)
    faults_served: dict[str, Counter[str]] = field(default_factory=dict)
    log: deque[dict[str, object]] = field(default_factory=lambda: deque(maxlen=LOG_SIZE))
    in_flight: Counter[str] = field(default_factory=Counter)
    most_concurrent: Counter[str] = field(default_factory=Counter)
    _weights: dict[tuple[str, int], int] = field(default_factory=dict)

    def record(self, entry: dict[str, object], endpoint: str, path: str, status: int, faults: Sequence[Fault]) -> None:
        self.requests[endpoint] += 1
        self.paths[path] += 1
        self.statuses.setdefault(endpoint, Counter())[str(status)] += 1
        for fault in faults:
            self.faults_served.setdefault(endpoint, Counter())[fault.kind] += 1
        self.log.append(entry)

    def started(self, job: str) -> None:
        self.in_flight[job] += 1
        self.most_concurrent[job] = max(self.most_concurrent[job], self.in_flight[job])

    def finished(self, job: str) -> None:
        self.in_flight[job] -= 1

    def use_weight(self, exchange: str, now_ms: int, weight: int) -> int:
        """Add a request's weight to the current minute's total and return that total."""
        minute = now_ms // 60_000
        key = (exchange, minute)
        self._weights[key] = self._weights.get(key, 0) + weight
        for old in [k for k in self._weights if k[1] < minute - 1]:
            del self._weights[old]
        return self._weights[key]

    def reset(self) -> None:
        self.requests.clear()
        self.paths.clear()
        self.statuses.clear()
        self.faults_served.clear()
        self.log.clear()
        self.most_concurrent.clear()

    def snapshot(self) -> dict[str, object]:
        return {
            "requests": dict(self.requests),
            "paths": dict(self.paths),
            "statuses": {key: dict(value) for key, value in self.statuses.items()},
            "faults_served": {key: dict(value) for key, value in self.faults_served.items()},
            "log": list(self.log),
            "most_concurrent": dict(self.most_concurrent),
        }


_MARKET: web.AppKey[Market] = web.AppKey("market")
_CLOCK: web.AppKey[Clock] = web.AppKey("clock")
_PLAN: web.AppKey[FaultPlan] = web.AppKey("fault_plan")
_STATS: web.AppKey[Stats] = web.AppKey("stats")
_CACHE: web.AppKey[AnswerCache | None] = web.AppKey("answer_cache")
_STREAMS: web.AppKey[StreamContext] = web.AppKey("streams")
_ARCHIVES: web.AppKey[ArchiveTree] = web.AppKey("archives")
_AGGREGATORS: web.AppKey[Aggregators] = web.AppKey("aggregators")


@dataclass
class AnswerCache:
    """Encoded answers of a market that no longer changes (a random walk past its `--end`), by
    request path and query: for benchmarks, where generating candles must not be what is measured.
    Only unfaulted answers are kept; counting, weights and faults still apply to every request."""

    closed_after_ms: int
    size: int = 100_000
    answers: dict[str, tuple[int, bytes, str, dict[str, str]]] = field(default_factory=dict)

    def usable(self, now_ms: int, decision: Decision) -> bool:
        return now_ms >= self.closed_after_ms and not decision.applied


def create_app(
    market: Market,
    clock: Clock = wall_clock_ms,
    exchanges: Iterable[str] = ("binance",),
    faults: FaultPlan | Iterable[Fault] = (),
    cache: AnswerCache | None = None,
    stream_faults: Iterable[StreamFault] = (),
    archive_faults: ArchiveFaults | None = None,
    aggregators: Aggregators | None = None,
) -> web.Application:
    names = list(dict.fromkeys(exchanges))
    unknown = [name for name in names if name not in VENUES]
    if unknown or not names:
        raise ValueError(f"unknown exchange(s) {unknown}; choose from {', '.join(EXCHANGES)}")
    app = web.Application()
    app[_MARKET] = market
    app[_CLOCK] = clock
    app[_PLAN] = faults if isinstance(faults, FaultPlan) else FaultPlan(faults)
    app[_STATS] = Stats()
    app[_CACHE] = cache
    streams = app[_STREAMS] = StreamContext(market, clock, StreamFaultPlan(stream_faults), StreamStats())
    if isinstance(market, LiveMarket):
        market.snapshot_lag = streams.plan.snapshot_lag
    for name in names:
        ws_venue = WS_VENUES.get(name)
        if ws_venue is not None:
            for path in ws_venue.paths:
                app.router.add_get(path, websocket_handler(ws_venue, streams))
    if "binance" in names:
        # data.binance.vision's tree, on the same host (the extractor's archive URL points here).
        archives = app[_ARCHIVES] = ArchiveTree(market, clock, archive_faults)
        for archive_route in ARCHIVE_ROUTES:
            app.router.add_get(archive_route, archives.handle)
        app.router.add_get("/", archives.list_bucket)
        app.router.add_get("/_sim/archive_faults", _get_archive_faults)
        app.router.add_post("/_sim/archive_faults", _add_archive_faults)
        app.router.add_delete("/_sim/archive_faults", _clear_archive_faults)
    # CoinGecko's and CoinPaprika's market lists, made of the same market (aggregators.py).
    app[_AGGREGATORS] = aggregators or Aggregators(market, clock)
    app[_AGGREGATORS].routes(app)
    for name in names:
        venue = VENUES[name]
        for prefix in venue.prefixes:
            for route in venue.routes:
                app.router.add_get(prefix + route.path, _endpoint(venue, route))
    app.router.add_get("/_sim/stats", _get_stats)
    app.router.add_delete("/_sim/stats", _reset_stats)
    app.router.add_get("/_sim/faults", _get_faults)
    app.router.add_post("/_sim/faults", _add_faults)
    app.router.add_put("/_sim/faults", _replace_faults)
    app.router.add_delete("/_sim/faults", _clear_faults)
    app.router.add_get("/_sim/stream_faults", _get_stream_faults)
    app.router.add_post("/_sim/stream_faults", _add_stream_faults)
    app.router.add_delete("/_sim/stream_faults", _clear_stream_faults)
    app.router.add_get("/_sim/streams", _get_streams)
    app.router.add_get("/_sim/book", _get_book)
    return app


class Simulator:
    """One listening server; `start()` returns its base URL, e.g. `http://127.0.0.1:41234`."""

    def __init__(
        self,
        market: Market,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Clock = wall_clock_ms,
        exchanges: Iterable[str] = ("binance",),
        faults: FaultPlan | Iterable[Fault] = (),
        cache: AnswerCache | None = None,
        stream_faults: Iterable[StreamFault] = (),
        archive_faults: ArchiveFaults | None = None,
        aggregator_key: str | None = None,
    ) -> None:
        aggregators = Aggregators(market, clock, aggregator_key)
        self.app = create_app(market, clock, exchanges, faults, cache, stream_faults, archive_faults, aggregators)
        self._runner = web.AppRunner(self.app, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        self._host = host
        self._port = port
        self._base_url: str | None = None

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("simulator is not started")
        return self._base_url

    @property
    def fault_plan(self) -> FaultPlan:
        return self.app[_PLAN]

    @property
    def stats(self) -> Stats:
        return self.app[_STATS]

    @property
    def streams(self) -> StreamContext:
        return self.app[_STREAMS]

    @property
    def archives(self) -> ArchiveTree:
        return self.app[_ARCHIVES]

    @property
    def aggregators(self) -> Aggregators:
        return self.app[_AGGREGATORS]

    async def start(self) -> str:
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self._host, self._port).start()
        except BaseException:
            await self._runner.cleanup()
            raise
        # With port 0 the OS picks the port, so ask the bound socket.
        bound_host, bound_port = self._runner.addresses[0][:2]
        self._base_url = f"http://{bound_host}:{bound_port}"
        return self._base_url

    async def stop(self) -> None:
        # Open websockets would hold the shutdown for its whole timeout.
        for session in list(self.app[_STREAMS].sessions):
            session.close_now()
        await self._runner.cleanup()
        self._base_url = None


@asynccontextmanager
async def running_simulator(
    market: Market,
    host: str = "127.0.0.1",
    port: int = 0,
    clock: Clock = wall_clock_ms,
    exchanges: Iterable[str] = ("binance",),
    faults: FaultPlan | Iterable[Fault] = (),
) -> AsyncIterator[str]:
    """Serve `market` for the duration of the block, yielding the base URL."""
    simulator = Simulator(market, host, port, clock, exchanges, faults)
    base_url = await simulator.start()
    try:
        yield base_url
    finally:
        await simulator.stop()


async def _get_archive_faults(request: web.Request) -> web.Response:
    tree = request.app[_ARCHIVES]
    return web.json_response({"faults": tree.faults.patterns, "requests": tree.requests})


async def _add_archive_faults(request: web.Request) -> web.Response:
    """`{"faults": ["KIND:PATTERN", ...]}`: from now on those files misbehave."""
    body = await request.json()
    try:
        specs = [parse_archive_fault_spec(str(spec)) for spec in body.get("faults", [])]
    except ValueError as error:
        return web.json_response({"error": str(error)}, status=400)
    tree = request.app[_ARCHIVES]
    for kind, pattern in specs:
        tree.faults.add(kind, pattern)
    return web.json_response({"faults": tree.faults.patterns})


async def _clear_archive_faults(request: web.Request) -> web.Response:
    request.app[_ARCHIVES].faults.patterns.clear()
    return web.json_response({"faults": {}})


def _endpoint(venue: Venue, route: Route) -> _Handler:
    endpoint = f"{venue.name}.{route.dataset}"

    async def handle(request: web.Request) -> web.StreamResponse:
        job = job_of(endpoint, request)
        request.app[_STATS].started(job)
        try:
            return await answer(request)
        finally:
            request.app[_STATS].finished(job)

    async def answer(request: web.Request) -> web.StreamResponse:
        app = request.app
        received_ms = wall_clock_ms()
        query = list(request.query.items())
        decision = app[_PLAN].decide(venue.name, route.dataset, request.path)
        if decision.delay is not None:
            await asyncio.sleep(decision.delay.seconds)
        now_ms = app[_CLOCK]()
        cache = app[_CACHE]
        if cache is not None and not cache.usable(now_ms, decision):
            cache = None
        cached = cache.answers.get(request.path_qs) if cache is not None else None
        if cached is not None:
            status, body, content_type, reply_headers = cached
        else:
            reply = _answer(venue, route, decision, query, app[_MARKET], now_ms)
            body, content_type = _encode(venue, route, reply, decision)
            status, reply_headers = reply.status, dict(reply.headers)
            if cache is not None and len(cache.answers) < cache.size:
                cache.answers[request.path_qs] = (status, body, content_type, reply_headers)
        headers = dict(reply_headers)
        if venue.weight_header is not None and route.weight is not None:
            used = app[_STATS].use_weight(venue.name, now_ms, route.weight(query))
            headers[venue.weight_header] = str(used)
        entry: dict[str, object] = {
            "t_ms": received_ms,
            "endpoint": endpoint,
            "path": request.path,
            "query": request.query_string,
            "status": status,
            "faults": [fault.kind for fault in decision.applied],
        }
        app[_STATS].record(entry, endpoint, request.path, status, decision.applied)
        cut = next((fault for fault in decision.body if fault.kind == "truncate"), None)
        if cut is not None and cut.cut == "connection":
            return await _cut_connection(request, status, headers, content_type, body)
        if cut is not None:
            body = body[: max(1, len(body) // 2)]
        response = web.Response(body=body, status=status, headers=headers)
        response.content_type = content_type
        if content_type == "application/json":
            response.charset = "UTF-8"
        return response

    return handle


def job_of(endpoint: str, request: web.Request) -> str:
    """The job a request belongs to, as a client's scheduler would name it: endpoint, symbol
    (`symbol` on Binance and Bybit, `currency_pair` on Gate) and candle interval."""
    query = request.query
    symbol = query.get("symbol") or query.get("currency_pair") or ""
    return " ".join(part for part in (endpoint, symbol, query.get("interval", "")) if part)


def _answer(
    venue: Venue, route: Route, decision: Decision, query: list[tuple[str, str]], market: Market, now_ms: int
) -> Reply:
    fault = decision.replace
    if fault is not None and fault.kind == "rate_limit":
        status = venue.default_rate_limit_status if fault.status is None else fault.status
        return venue.rate_limited(status, fault.retry_after, now_ms)
    if fault is not None:
        status = 503 if fault.status is None else fault.status
        if fault.body == "native":
            return Reply(venue.server_error(status, now_ms), status)
        return gateway_error(status, HTTPStatus(status).phrase)
    try:
        result = route.handle(query, market, now_ms)
    except WireError as error:
        return error.reply()
    return result if isinstance(result, Reply) else Reply(result)


def _encode(venue: Venue, route: Route, reply: Reply, decision: Decision) -> tuple[bytes, str]:
    if reply.raw is not None:
        payload, content_type = reply.raw, reply.content_type
    else:
        body = reply.body
        for fault in decision.body:
            if fault.kind in ("drop_field", "add_field"):
                mutate_records(venue.records(route.dataset, body), fault, venue.row_fields.get(route.dataset, ()))
        payload, content_type = orjson.dumps(body), "application/json"
    return payload, content_type


async def _cut_connection(
    request: web.Request, status: int, headers: dict[str, str], content_type: str, payload: bytes
) -> web.StreamResponse:
    """Promise the whole body, send half of it, and hang up."""
    response = web.StreamResponse(status=status, headers=headers)
    response.content_type = content_type
    response.content_length = len(payload)
    await response.prepare(request)
    await response.write(payload[: max(1, len(payload) // 2)])
    if request.transport is not None:
        request.transport.close()
    return response


async def _get_stats(request: web.Request) -> web.Response:
    return _json({**request.app[_STATS].snapshot(), "faults": request.app[_PLAN].snapshot()})


async def _reset_stats(request: web.Request) -> web.Response:
    request.app[_STATS].reset()
    return _json({})


async def _get_faults(request: web.Request) -> web.Response:
    return _json({"faults": request.app[_PLAN].snapshot()})


async def _add_faults(request: web.Request) -> web.Response:
    return await _change_faults(request, replace=False)


async def _replace_faults(request: web.Request) -> web.Response:
    return await _change_faults(request, replace=True)


async def _clear_faults(request: web.Request) -> web.Response:
    request.app[_PLAN].clear()
    return _json({"faults": []})


async def _change_faults(request: web.Request, replace: bool) -> web.Response:
    try:
        faults = faults_from_json(orjson.loads(await request.read()))
    except (orjson.JSONDecodeError, ValueError) as error:
        return _json({"error": str(error)}, status=400)
    plan = request.app[_PLAN]
    if replace:
        plan.clear()
    plan.add(faults)
    return _json({"faults": plan.snapshot()})


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json", charset="UTF-8")


async def _get_stream_faults(request: web.Request) -> web.Response:
    return _json({"faults": request.app[_STREAMS].plan.snapshot()})


async def _add_stream_faults(request: web.Request) -> web.Response:
    try:
        faults = stream_faults_from_json(orjson.loads(await request.read()))
    except (orjson.JSONDecodeError, ValueError, TypeError) as error:
        return _json({"error": str(error)}, status=400)
    plan = request.app[_STREAMS].plan
    plan.add(faults)
    return _json({"faults": plan.snapshot()})


async def _clear_stream_faults(request: web.Request) -> web.Response:
    request.app[_STREAMS].plan.clear()
    return _json({"faults": []})


async def _get_streams(request: web.Request) -> web.Response:
    return _json(request.app[_STREAMS].stats.snapshot())


async def _get_book(request: web.Request) -> web.Response:
    """The true live book: `symbol` (exchange id, e.g. BTCUSDT), `update_id` (the book whose last
    update has that id; default: now) and `depth` (default 20); prices and sizes as strings."""
    market = request.app[_MARKET]
    if not isinstance(market, LiveMarket):
        return _json({"error": "not a live market (start with --book-tick-ms)"}, status=400)
    try:
        symbol = request.query["symbol"]
        depth = int(request.query.get("depth", "20"))
        update_id = request.query.get("update_id")
        tick = market.tick_of_update_id(int(update_id)) if update_id else market.tick_at(request.app[_CLOCK]())
    except (KeyError, ValueError) as error:
        return _json({"error": f"bad query: {error}"}, status=400)
    book = market.book_at(symbol, tick)
    top = book.top(depth)
    return _json(
        {
            "symbol": symbol,
            "tick": tick,
            "update_id": book.update_id,
            "bids": [[f"{level.price:.8f}", f"{level.size:.8f}"] for level in top.bids],
            "asks": [[f"{level.price:.8f}", f"{level.size:.8f}"] for level in top.asks],
        }
    )
