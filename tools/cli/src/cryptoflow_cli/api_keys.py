"""`cryptoflow api-key create|revoke|list`: the read API's keys, managed with the admin database URL.

`create` prints the new key as its last line, once: only its SHA-256 digest is stored.
"""

from __future__ import annotations

import asyncio
import json
import sys

import asyncpg
from cryptoflow_api import ApiKey, create_key, list_keys, revoke_keys


async def _with_connection(url: str) -> asyncpg.Connection:
    return await asyncpg.connect(url)


def _row(key: ApiKey) -> dict[str, object]:
    return {
        "name": key.name,
        "prefix": key.key_prefix,
        "rate_per_s": key.rate_per_s,
        "burst": key.burst,
        "created_at": key.created_at.isoformat(),
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
    }


async def _create(url: str, name: str, rate_per_s: float, burst: int) -> int:
    conn = await _with_connection(url)
    try:
        record, key = await create_key(conn, name, rate_per_s=rate_per_s, burst=burst)
    finally:
        await conn.close()
    print(f"created API key {record.name!r} ({record.key_prefix}…, {record.rate_per_s:g}/s, burst {record.burst})")
    print("store it now: it is not kept and cannot be shown again", file=sys.stderr)
    print(key)
    return 0


async def _revoke(url: str, name_or_prefix: str) -> int:
    conn = await _with_connection(url)
    try:
        revoked = await revoke_keys(conn, name_or_prefix)
    finally:
        await conn.close()
    if not revoked:
        print(f"error: no active key named or prefixed {name_or_prefix!r}", file=sys.stderr)
        return 1
    for key in revoked:
        print(f"revoked {key.name!r} ({key.key_prefix}…)")
    return 0


async def _list(url: str, as_json: bool) -> int:
    conn = await _with_connection(url)
    try:
        keys = await list_keys(conn)
    finally:
        await conn.close()
    if as_json:
        print(json.dumps([_row(k) for k in keys], indent=2))
        return 0
    print(f"{'name':<24} {'prefix':<12} {'rate/s':>8} {'burst':>6}  {'created':<25} revoked")
    for key in keys:
        revoked = key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else "-"
        created = key.created_at.isoformat(timespec="seconds")
        print(f"{key.name:<24} {key.key_prefix:<12} {key.rate_per_s:>8g} {key.burst:>6}  {created:<25} {revoked}")
    return 0


def main(url: str, command: str, name: str | None, rate_per_s: float, burst: int, as_json: bool) -> int:
    if command == "create":
        assert name is not None
        return asyncio.run(_create(url, name, rate_per_s, burst))
    if command == "revoke":
        assert name is not None
        return asyncio.run(_revoke(url, name))
    return asyncio.run(_list(url, as_json))
