"""Retry, Retry-After and circuit-breaker policy of every exchange call."""

from __future__ import annotations

import time
from typing import Any

import ccxt.async_support as ccxt
import pytest
from cryptoflow_extractor.limiter import RateLimiter
from cryptoflow_extractor.resilience import CircuitBreaker, CircuitOpenError, ExchangeCaller, RetryPolicy


class FakeExchange:
    """Only what ExchangeCaller reads from a ccxt instance: the last response's parts."""

    def __init__(self) -> None:
        self.last_response_headers: dict[str, str] = {}
        self.last_json_response: Any = None
        self.last_http_response: str | None = None


def scripted(exchange: FakeExchange, outcomes: list[Any]) -> Any:
    calls = {"n": 0}

    async def request() -> Any:
        outcome = outcomes[calls["n"]]
        calls["n"] += 1
        if isinstance(outcome, tuple):
            error, headers = outcome
            exchange.last_response_headers = headers
            raise error
        if isinstance(outcome, Exception):
            raise outcome
        exchange.last_json_response = outcome
        exchange.last_http_response = repr(outcome)
        return outcome

    request.calls = calls  # type: ignore[attr-defined]
    return request


def caller(
    exchange: FakeExchange, breaker: CircuitBreaker | None = None, attempts: int = 5
) -> tuple[ExchangeCaller, list[float]]:
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    call = ExchangeCaller(
        "fake",
        exchange,  # type: ignore[arg-type]
        RateLimiter("fake", 0.0),
        breaker or CircuitBreaker("fake", threshold=10, cooldown_s=60),
        RetryPolicy(max_attempts=attempts, base_delay_s=0.1, max_delay_s=1.0, jitter=0.0),
        sleep=sleep,
    )
    return call, sleeps


async def test_transient_errors_are_retried_with_exponential_backoff() -> None:
    exchange = FakeExchange()
    request = scripted(
        exchange, [ccxt.RequestTimeout("t"), ccxt.ExchangeNotAvailable("503"), ccxt.NetworkError("x"), [1, 2]]
    )
    call, sleeps = caller(exchange)
    fetched = await call.call("ohlcv", request)
    assert fetched.result == [1, 2] and fetched.raw_json == [1, 2]
    assert request.calls["n"] == 4
    assert sleeps == [0.1, 0.2, 0.4]


async def test_gives_up_after_max_attempts_with_the_last_error() -> None:
    exchange = FakeExchange()
    request = scripted(exchange, [ccxt.RequestTimeout("t")] * 3)
    call, _ = caller(exchange, attempts=3)
    with pytest.raises(ccxt.RequestTimeout):
        await call.call("ohlcv", request)
    assert request.calls["n"] == 3


async def test_rate_limited_pauses_the_exchange_for_retry_after() -> None:
    exchange = FakeExchange()
    request = scripted(exchange, [(ccxt.RateLimitExceeded("429"), {"Retry-After": "0.3"}), "ok"])
    call, _ = caller(exchange)
    started = time.monotonic()
    fetched = await call.call("ticker", request)
    waited = time.monotonic() - started
    assert fetched.result == "ok"
    # The limiter held the retry for the server's Retry-After (not a timing assertion on speed:
    # a lower bound that only holds if the pause was honoured).
    assert waited >= 0.29


async def test_non_transient_errors_are_not_retried() -> None:
    exchange = FakeExchange()
    request = scripted(exchange, [ccxt.BadSymbol("no such market"), "never"])
    call, _ = caller(exchange)
    with pytest.raises(ccxt.BadSymbol):
        await call.call("ohlcv", request)
    assert request.calls["n"] == 1


async def test_circuit_opens_after_consecutive_failures_and_half_opens_after_cooldown() -> None:
    exchange = FakeExchange()
    breaker = CircuitBreaker("fake", threshold=2, cooldown_s=0.2)
    request = scripted(exchange, [ccxt.NetworkError("a"), ccxt.NetworkError("b"), "recovered"])
    call, _ = caller(exchange, breaker=breaker, attempts=2)
    with pytest.raises(ccxt.NetworkError):
        await call.call("ohlcv", request)
    assert breaker.is_open
    with pytest.raises(CircuitOpenError):
        await call.call("ohlcv", request)
    assert request.calls["n"] == 2, "an open circuit sends nothing to the exchange"
    await _sleep(0.25)
    fetched = await call.call("ohlcv", request)
    assert fetched.result == "recovered" and not breaker.is_open


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)
