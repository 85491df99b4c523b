"""One request-rate limiter per exchange, shared by all of that exchange's jobs."""

from __future__ import annotations

import asyncio
import time

from .metrics import RATE_LIMIT_WAIT


class RateLimiter:
    """Spaces requests `interval_s` apart (ccxt's `rateLimit` semantics) and can be paused.

    A pause (after a 429/418 with Retry-After) holds every job of the exchange, because the
    exchange bans the client, not one request.
    """

    def __init__(self, exchange: str, interval_s: float) -> None:
        self.exchange = exchange
        self.interval_s = interval_s
        self._next_at = 0.0
        self._paused_until = 0.0
        self._lock = asyncio.Lock()

    def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    async def acquire(self, cost: float = 1.0) -> float:
        """Wait for a slot; returns the seconds waited."""
        async with self._lock:
            now = time.monotonic()
            start = max(now, self._next_at, self._paused_until)
            self._next_at = start + self.interval_s * cost
        wait = max(0.0, start - now)
        if wait > 0:
            await asyncio.sleep(wait)
        # A pause that began while we slept (another job got a 429) holds us too.
        while (remaining := self._paused_until - time.monotonic()) > 0:
            wait += remaining
            await asyncio.sleep(remaining)
        if wait > 0:
            RATE_LIMIT_WAIT.labels(self.exchange).inc(wait)
        return wait
