"""API keys: made once, shown once, stored as their SHA-256 digest (decision 0047).

A key is `cfk_` + 32 random bytes (URL-safe base64). With 256 bits of entropy a plain SHA-256 is
enough: a slow password hash protects guessable secrets, and nobody can guess these; a fast digest
also lets every request be checked by one indexed lookup. The key itself is never stored nor
logged: listings show its first characters (`key_prefix`) only.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from .problems import ProblemError

KEY_PREFIX = "cfk_"
SHOWN_PREFIX_CHARS = 10  # "cfk_" and six characters of the random part: enough to tell keys apart


@dataclass(frozen=True)
class ApiKey:
    key_id: int
    name: str
    key_prefix: str
    rate_per_s: float
    burst: int
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


_COLUMNS = "key_id, name, key_prefix, rate_per_s, burst, created_at, revoked_at"


def _key(row: asyncpg.Record) -> ApiKey:
    return ApiKey(**dict(row))


async def create_key(
    conn: asyncpg.Connection, name: str, *, rate_per_s: float = 20.0, burst: int = 100
) -> tuple[ApiKey, str]:
    """A new key named `name`: its stored record and the key itself (shown once, never stored)."""
    key = new_key()
    row = await conn.fetchrow(
        f"INSERT INTO api_keys (name, key_prefix, key_sha256, rate_per_s, burst) VALUES ($1, $2, $3, $4, $5) "
        f"RETURNING {_COLUMNS}",
        name,
        key[:SHOWN_PREFIX_CHARS],
        digest(key),
        rate_per_s,
        burst,
    )
    assert row is not None
    return _key(row), key


async def revoke_keys(conn: asyncpg.Connection, name_or_prefix: str) -> list[ApiKey]:
    """Revoke the active keys with this name, or the one whose listed prefix this is."""
    rows = await conn.fetch(
        f"UPDATE api_keys SET revoked_at = now() WHERE revoked_at IS NULL AND (name = $1 OR key_prefix = $1) "
        f"RETURNING {_COLUMNS}",
        name_or_prefix,
    )
    return [_key(row) for row in rows]


async def list_keys(conn: asyncpg.Connection) -> list[ApiKey]:
    return [_key(row) for row in await conn.fetch(f"SELECT {_COLUMNS} FROM api_keys ORDER BY key_id")]


async def find_key(conn: asyncpg.Connection | asyncpg.Pool, key: str) -> ApiKey | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM api_keys WHERE key_sha256 = $1", digest(key))
    return _key(row) if row is not None else None


class KeyCache:
    """Keys looked up by digest, each answer kept `ttl_s` seconds: a revocation takes effect within
    that time, and a client's requests cost one database lookup per `ttl_s` instead of one each."""

    def __init__(self, pool: asyncpg.Pool, ttl_s: float) -> None:
        self._pool = pool
        self._ttl_s = ttl_s
        self._entries: dict[str, tuple[float, ApiKey | None]] = {}

    async def lookup(self, key: str) -> ApiKey | None:
        if not key.startswith(KEY_PREFIX) or len(key) > 100:
            return None
        hashed = digest(key)
        now = time.monotonic()
        cached = self._entries.get(hashed)
        if cached is not None and now - cached[0] < self._ttl_s:
            return cached[1]
        try:
            found = await find_key(self._pool, key)
        except asyncpg.UndefinedTableError:
            # Started before the warehouse was migrated: nobody can be let in yet.
            raise ProblemError(503, "the warehouse is not migrated yet (no api_keys)", kind="not-ready") from None
        if self._ttl_s > 0:
            if len(self._entries) > 10_000:  # bounded: unknown keys must not grow it without end
                self._entries.clear()
            self._entries[hashed] = (now, found)
        return found
