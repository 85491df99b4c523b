"""Per-client rate limits: a token bucket per API key (or client address), kept in this process.

Each replica keeps its own buckets, so N replicas behind a load balancer let a key through up to
N times its rate (decision 0047); a shared limit would need a shared store on every request.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class TokenBucket:
    rate_per_s: float
    burst: int
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """Take one token: 0.0 when allowed, else the seconds until one is there."""
        self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate_per_s)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate_per_s


class RateLimiter:
    """Buckets by client identity; the least recently used are forgotten past `max_clients`."""

    def __init__(self, max_clients: int = 100_000) -> None:
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._max_clients = max_clients

    def check(self, client: str, rate_per_s: float, burst: int) -> int:
        """0 when the request may go on, else the whole seconds to wait (Retry-After)."""
        now = time.monotonic()
        bucket = self._buckets.get(client)
        if bucket is None or bucket.rate_per_s != rate_per_s or bucket.burst != burst:
            bucket = TokenBucket(rate_per_s, burst, float(burst), now)
            self._buckets[client] = bucket
        self._buckets.move_to_end(client)
        while len(self._buckets) > self._max_clients:
            self._buckets.popitem(last=False)
        wait = bucket.take(now)
        return 0 if wait == 0.0 else max(1, math.ceil(wait))
