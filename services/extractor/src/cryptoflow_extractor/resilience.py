"""Calling an exchange: rate limit, retries with backoff and jitter, Retry-After, circuit breaker."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import ccxt.async_support as ccxt

from .leases import check_lease
from .limiter import RateLimiter
from .metrics import CIRCUIT_OPEN, REQUEST_SECONDS, REQUESTS

log = logging.getLogger(__name__)

# Worth another try: the network, the exchange being busy or down, a response cut short.
TRANSIENT = (ccxt.NetworkError, ccxt.BadResponse)
RATE_LIMITED = (ccxt.RateLimitExceeded, ccxt.DDoSProtection)


def is_transient(exc: BaseException, http_status: int | None) -> bool:
    """Network faults, 5xx answers (whatever ccxt mapped their body to) and cut connections."""
    if isinstance(exc, TRANSIENT):
        return True
    if isinstance(exc, ccxt.BaseError) and http_status is not None and http_status >= 500:
        return True
    # A connection cut mid-body surfaces as a plain ExchangeError caused by aiohttp.
    return isinstance(exc, ccxt.ExchangeError) and isinstance(exc.__cause__, aiohttp.ClientError)


@dataclass(frozen=True)
class Fetched:
    """A ccxt result with the exchange's raw response it was parsed from."""

    result: Any
    raw_json: Any
    raw_text: str | None


class CircuitOpenError(Exception):
    """The exchange failed too often; calls are refused until the cool-down passes."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    jitter: float = 0.25

    def delay(self, attempt: int) -> float:
        """Exponential backoff with jitter: spreads retries of many jobs apart."""
        raw = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        return float(raw * (1 + random.uniform(-self.jitter, self.jitter)))


class CircuitBreaker:
    """Opens after `threshold` consecutive failures; half-opens after `cooldown_s`."""

    def __init__(self, exchange: str, threshold: int = 5, cooldown_s: float = 30.0) -> None:
        self.exchange = exchange
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.failures = 0
        self.opened_at: float | None = None
        CIRCUIT_OPEN.labels(exchange).set(0)

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None and time.monotonic() - self.opened_at < self.cooldown_s

    def seconds_until_half_open(self) -> float:
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.cooldown_s - (time.monotonic() - self.opened_at))

    def check(self) -> None:
        if self.is_open:
            raise CircuitOpenError(f"{self.exchange}: circuit open for {self.seconds_until_half_open():.1f}s more")

    def record_success(self) -> None:
        if self.opened_at is not None:
            log.info("circuit closed", extra={"exchange": self.exchange})
        self.failures = 0
        self.opened_at = None
        CIRCUIT_OPEN.labels(self.exchange).set(0)

    def record_failure(self) -> None:
        self.failures += 1
        if self.failures >= self.threshold:
            if not self.is_open:
                log.warning("circuit opened", extra={"exchange": self.exchange, "failures": self.failures})
            # A failure while half-open re-opens for a full cool-down.
            self.opened_at = time.monotonic()
            CIRCUIT_OPEN.labels(self.exchange).set(1)


def retry_after_s(exchange: ccxt.Exchange) -> float | None:
    headers = exchange.last_response_headers or {}
    for name, value in headers.items():
        if name.lower() == "retry-after":
            try:
                return max(0.0, float(value))
            except ValueError:
                return None
    return None


class ExchangeCaller:
    """Every exchange request of every job goes through here."""

    def __init__(
        self,
        exchange_id: str,
        exchange: ccxt.Exchange,
        limiter: RateLimiter,
        breaker: CircuitBreaker,
        policy: RetryPolicy,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        request_lease_s: float = 0.0,
    ) -> None:
        self.exchange_id = exchange_id
        self.exchange = exchange
        self.limiter = limiter
        self.breaker = breaker
        self.policy = policy
        self._sleep = sleep
        self.request_lease_s = request_lease_s

    async def call(self, dataset: str, request: Callable[[], Awaitable[Any]]) -> Fetched:
        attempt = 0
        while True:
            attempt += 1
            self.breaker.check()
            await self.limiter.acquire()
            # After the limiter's wait: a request starts only while its job's lease outlives it.
            check_lease(self.request_lease_s)
            started = time.perf_counter()
            self.exchange.last_http_status = None
            try:
                result = await request()
                # Read right after the await, before any other task runs: ccxt keeps only the
                # latest response per instance, and jobs share the instance.
                fetched = Fetched(result, self.exchange.last_json_response, self.exchange.last_http_response)
            except RATE_LIMITED as exc:
                wait = retry_after_s(self.exchange)
                wait = wait if wait is not None else self.policy.delay(attempt)
                self._count(dataset, exc, started)
                self.limiter.pause(wait)
                log.warning(
                    "rate limited", extra={"exchange": self.exchange_id, "dataset": dataset, "retry_in_s": wait}
                )
                if attempt >= self.policy.max_attempts:
                    raise
                continue
            except Exception as exc:
                self._count(dataset, exc, started)
                if not is_transient(exc, getattr(self.exchange, "last_http_status", None)):
                    raise
                self.breaker.record_failure()
                if attempt >= self.policy.max_attempts:
                    raise
                delay = self.policy.delay(attempt)
                log.warning(
                    "exchange request failed, retrying",
                    extra={"exchange": self.exchange_id, "dataset": dataset, "error": repr(exc), "retry_in_s": delay},
                )
                await self._sleep(delay)
                continue
            REQUESTS.labels(self.exchange_id, dataset, "ok").inc()
            REQUEST_SECONDS.labels(self.exchange_id, dataset).observe(time.perf_counter() - started)
            self.breaker.record_success()
            return fetched

    def _count(self, dataset: str, exc: BaseException, started: float) -> None:
        REQUESTS.labels(self.exchange_id, dataset, type(exc).__name__).inc()
        REQUEST_SECONDS.labels(self.exchange_id, dataset).observe(time.perf_counter() - started)
