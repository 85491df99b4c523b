"""Who is asking, and may they: the request's API key (`Authorization: Bearer <key>`) and its rate."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection

from .config import ApiSettings
from .keys import KeyCache
from .metrics import AUTH_FAILURES, RATE_LIMITED
from .problems import ProblemError
from .ratelimit import RateLimiter

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="cryptoflow"'}


@dataclass(frozen=True)
class Caller:
    """Whoever made the request; `name` is safe to log (a key's name, never the key)."""

    name: str
    key_id: int | None


def bearer_key(connection: HTTPConnection) -> str | None:
    """The key of `Authorization: Bearer <key>`; for browsers' EventSource and WebSocket, which
    cannot set headers, the `api_key` query parameter (query strings are never logged here)."""
    header = connection.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise ProblemError(401, "Authorization must be 'Bearer <key>'", kind="unauthorized", headers=_CHALLENGE)
        return value.strip()
    return connection.query_params.get("api_key")


class Gate:
    """Authentication and per-client rate limits, one per process (see ratelimit.py: per replica)."""

    def __init__(self, settings: ApiSettings, keys: KeyCache) -> None:
        self._settings = settings
        self._keys = keys
        self._limiter = RateLimiter()

    async def admit(self, connection: HTTPConnection) -> Caller:
        key = bearer_key(connection)
        if key is None:
            if self._settings.auth_required:
                AUTH_FAILURES.labels("missing").inc()
                raise ProblemError(401, "an API key is required", kind="unauthorized", headers=_CHALLENGE)
            client = connection.client.host if connection.client else "unknown"
            self._limit(f"address:{client}", self._settings.anonymous_rate_per_s, self._settings.anonymous_burst)
            return Caller(name="anonymous", key_id=None)
        found = await self._keys.lookup(key)
        if found is None or not found.active:
            reason = "unknown" if found is None else "revoked"
            AUTH_FAILURES.labels(reason).inc()
            raise ProblemError(401, f"the API key is {reason}", kind="unauthorized", headers=_CHALLENGE)
        self._limit(f"key:{found.key_id}", found.rate_per_s, found.burst)
        return Caller(name=found.name, key_id=found.key_id)

    def _limit(self, client: str, rate_per_s: float, burst: int) -> None:
        retry_after = self._limiter.check(client, rate_per_s, burst)
        if retry_after:
            RATE_LIMITED.inc()
            raise ProblemError(
                429,
                f"over the rate limit of {rate_per_s:g} requests/s (burst {burst})",
                kind="rate-limited",
                headers={"Retry-After": str(retry_after)},
            )
