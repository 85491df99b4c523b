"""HTTP server exposing a market through Binance's public spot REST endpoints."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import orjson
from aiohttp import web

from cryptoflow_exchange_sim.binance import (
    BinanceError,
    exchange_info_body,
    invalid_symbol,
    klines_body,
    parse_klines_request,
    select_exchange_info_listings,
    server_time_body,
)
from cryptoflow_exchange_sim.market import Market

Clock = Callable[[], int]

# Binance's own REST prefix. Routes are served both under it and at the root: overriding
# ccxt's `urls['api']` entries with the bare base URL drops the prefix, keeping the
# original URL paths keeps it, and both recipes should reach the same endpoints.
SPOT_API_PREFIX = "/api/v3"

_MARKET: web.AppKey[Market] = web.AppKey("market")
_CLOCK: web.AppKey[Clock] = web.AppKey("clock")
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def create_app(market: Market, clock: Clock = wall_clock_ms) -> web.Application:
    app = web.Application(middlewares=[_binance_errors])
    app[_MARKET] = market
    app[_CLOCK] = clock
    for prefix in (SPOT_API_PREFIX, ""):
        app.router.add_get(f"{prefix}/ping", _ping)
        app.router.add_get(f"{prefix}/time", _time)
        app.router.add_get(f"{prefix}/exchangeInfo", _exchange_info)
        app.router.add_get(f"{prefix}/klines", _klines)
    return app


class Simulator:
    """One listening server; `start()` returns its base URL, e.g. `http://127.0.0.1:41234`."""

    def __init__(self, market: Market, host: str = "127.0.0.1", port: int = 0, clock: Clock = wall_clock_ms) -> None:
        self._runner = web.AppRunner(create_app(market, clock))
        self._host = host
        self._port = port
        self._base_url: str | None = None

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("simulator is not started")
        return self._base_url

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
        await self._runner.cleanup()
        self._base_url = None


@asynccontextmanager
async def running_simulator(
    market: Market, host: str = "127.0.0.1", port: int = 0, clock: Clock = wall_clock_ms
) -> AsyncIterator[str]:
    """Serve `market` for the duration of the block, yielding the base URL."""
    simulator = Simulator(market, host, port, clock)
    base_url = await simulator.start()
    try:
        yield base_url
    finally:
        await simulator.stop()


@web.middleware
async def _binance_errors(request: web.Request, handler: _Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except BinanceError as error:
        return _json(error.body(), status=error.http_status)


async def _ping(request: web.Request) -> web.Response:
    return _json({})


async def _time(request: web.Request) -> web.Response:
    return _json(server_time_body(request.app[_CLOCK]()))


async def _exchange_info(request: web.Request) -> web.Response:
    listings = select_exchange_info_listings(list(request.query.items()), request.app[_MARKET].listings())
    return _json(exchange_info_body(listings, request.app[_CLOCK]()))


async def _klines(request: web.Request) -> web.Response:
    parsed = parse_klines_request(list(request.query.items()))
    market = request.app[_MARKET]
    if all(listing.symbol_id != parsed.symbol_id for listing in market.listings()):
        raise invalid_symbol()
    klines = market.klines(parsed.symbol_id, parsed.interval, parsed.window, request.app[_CLOCK]())
    return _json(klines_body(klines))


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json", charset="UTF-8")
