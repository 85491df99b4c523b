"""A client that goes away mid-stream frees what its response held: the COPY stops and its pooled
connection comes back, so clients that leave early never exhaust the pool."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import httpx

from .support import generate_candles, new_key, serve, settings

POOL = 2


async def test_clients_leaving_mid_stream_do_not_exhaust_the_pool(
    warehouse_url: str, reader_url: str, nats_url: str, tmp_path: Path
) -> None:
    await generate_candles(warehouse_url, tmp_path, 300_000)
    key = await new_key(warehouse_url)
    params = {"symbol": "GEN/USDT", "format": "csv"}
    with serve(settings(reader_url, nats_url, pool_size=POOL, chunk_bytes=64 * 1024)) as base:
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
            # More early leavers than the pool has connections, one after the other.
            for _ in range(3 * POOL):
                async with client.stream("GET", "/v1/ohlcv", params=params) as response:
                    assert response.status_code == 200
                    async for _chunk in response.aiter_bytes():
                        break  # read a little, then hang up
            # The pool still serves: a small range comes back whole.
            small = await client.get("/v1/ohlcv", params={**params, "limit": 10})
            assert small.status_code == 200 and len(small.text.splitlines()) == 11
        # No COPY of theirs is left running on the server.
        admin = await asyncpg.connect(warehouse_url)
        try:
            user = reader_url.split("//", 1)[1].split("@", 1)[0]

            async def copies() -> int:
                return int(
                    await admin.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND state = 'active' "
                        "AND query LIKE 'COPY%'",
                        user,
                    )
                )

            for _ in range(100):
                if await copies() == 0:
                    break
                await asyncio.sleep(0.1)
            assert await copies() == 0
        finally:
            await admin.close()


async def test_ready_while_every_pooled_connection_is_streaming(
    warehouse_url: str, reader_url: str, nats_url: str, tmp_path: Path
) -> None:
    # Busy is not unready: a probe that waited for a pooled connection would take a saturated
    # replica out of service exactly when it is needed.
    await generate_candles(warehouse_url, tmp_path, 300_000)
    key = await new_key(warehouse_url)
    params = {"symbol": "GEN/USDT", "format": "csv"}
    with serve(settings(reader_url, nats_url, pool_size=POOL, chunk_bytes=64 * 1024)) as base:
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
            streams = [client.stream("GET", "/v1/ohlcv", params=params) for _ in range(POOL)]
            responses = [await stream.__aenter__() for stream in streams]
            try:
                for response in responses:
                    assert response.status_code == 200
                    async for _chunk in response.aiter_bytes():
                        break  # started, then not read: each holds its pooled connection
                ready = await client.get("/readyz")
                assert ready.status_code == 200, ready.text
                assert ready.json()["checks"] == {"database": True, "nats": True}
            finally:
                for stream in streams:
                    await stream.__aexit__(None, None, None)
