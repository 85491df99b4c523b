"""Keys, rate limits and problem details, against real PostgreSQL: no key, an unknown or revoked key
→ 401; over the key's rate → 429; health and metrics stay open; the reader role cannot write."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import asyncpg
import httpx
import pytest

from .support import new_key, serve, settings

PROBLEM = "application/problem+json"


def assert_problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, object] = response.json()
    assert body["status"] == status
    assert body["title"] and body["detail"] and body["type"]
    return body


async def test_no_key_unknown_key_and_revoked_key_are_refused(
    warehouse_url: str, reader_url: str, nats_url: str
) -> None:
    key = await new_key(warehouse_url, "alice")
    with serve(settings(reader_url, nats_url)) as base:
        async with httpx.AsyncClient(base_url=base) as client:
            body = assert_problem(await client.get("/v1/series"), 401)
            assert body["type"] == "https://cryptoflow.dev/problems/unauthorized"
            assert (await client.get("/v1/series")).headers["www-authenticate"].startswith("Bearer")
            assert_problem(await client.get("/v1/series", headers={"Authorization": "Bearer cfk_not-a-key"}), 401)
            assert_problem(await client.get("/v1/series", headers={"Authorization": f"Basic {key}"}), 401)

            ok = await client.get("/v1/series", headers={"Authorization": f"Bearer {key}"})
            assert ok.status_code == 200, ok.text
            assert ok.json() == {"resource": "series", "next_cursor": None, "data": []}

            conn = await asyncpg.connect(warehouse_url)
            try:
                await conn.execute("UPDATE api_keys SET revoked_at = now() WHERE name = 'alice'")
            finally:
                await conn.close()
            body = assert_problem(await client.get("/v1/series", headers={"Authorization": f"Bearer {key}"}), 401)
            assert "revoked" in str(body["detail"])

            # Health and metrics need no key.
            assert (await client.get("/healthz")).json()["status"] == "ok"
            ready = await client.get("/readyz")
            assert ready.status_code == 200 and ready.json()["checks"] == {"database": True, "nats": True}
            metrics = (await client.get("/metrics")).text
            assert 'cryptoflow_api_auth_failures_total{reason="revoked"}' in metrics


async def test_over_its_rate_a_key_gets_429_with_retry_after(
    warehouse_url: str, reader_url: str, nats_url: str
) -> None:
    # A rate no test run can keep up with refilling: the burst is all there is.
    slow = await new_key(warehouse_url, "slow", rate_per_s=0.001, burst=3)
    other = await new_key(warehouse_url, "other", rate_per_s=0.001, burst=3)
    with serve(settings(reader_url, nats_url)) as base:
        async with httpx.AsyncClient(base_url=base) as client:
            statuses = [
                (await client.get("/v1/gaps", headers={"Authorization": f"Bearer {slow}"})).status_code
                for _ in range(5)
            ]
            assert statuses == [200, 200, 200, 429, 429]
            refused = await client.get("/v1/gaps", headers={"Authorization": f"Bearer {slow}"})
            body = assert_problem(refused, 429)
            assert body["type"] == "https://cryptoflow.dev/problems/rate-limited"
            assert int(refused.headers["retry-after"]) >= 1
            # Limits are per key: another key is not affected.
            assert (await client.get("/v1/gaps", headers={"Authorization": f"Bearer {other}"})).status_code == 200


async def test_unauthenticated_access_is_opt_in(reader_url: str, nats_url: str) -> None:
    with serve(settings(reader_url, nats_url, auth_required=False)) as base:
        async with httpx.AsyncClient(base_url=base) as client:
            assert (await client.get("/v1/series")).status_code == 200


async def test_bad_requests_are_problem_details(warehouse_url: str, reader_url: str, nats_url: str) -> None:
    key = await new_key(warehouse_url)
    auth = {"Authorization": f"Bearer {key}"}
    with serve(settings(reader_url, nats_url)) as base:
        async with httpx.AsyncClient(base_url=base, headers=auth) as client:
            assert_problem(await client.get("/v1/ohlcv", params={"limit": 0}), 400)
            assert_problem(await client.get("/v1/ohlcv", params={"start": "yesterday"}), 400)
            assert_problem(await client.get("/v1/ohlcv", params={"cursor": "garbage"}), 400)
            assert_problem(await client.get("/v1/ohlcv", params={"format": "xml"}), 400)
            assert_problem(await client.get("/v1/ohlcv", headers={"Accept": "application/xml"}), 406)
            assert_problem(await client.get("/v1/nothing"), 404)


async def test_reader_role_cannot_write(reader_url: str) -> None:
    conn = await asyncpg.connect(reader_url)
    try:
        for statement in (
            "INSERT INTO api_keys (name, key_prefix, key_sha256) VALUES ('x', 'x', repeat('0', 64))",
            "UPDATE api_keys SET revoked_at = now()",
            "DELETE FROM series",
            "CREATE TABLE evil (x int)",
        ):
            with pytest.raises((asyncpg.InsufficientPrivilegeError, asyncpg.ReadOnlySQLTransactionError)):
                await conn.execute(statement)
        assert await conn.fetchval("SELECT count(*) FROM api_keys") == 0
    finally:
        await conn.close()


def cryptoflow(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cryptoflow_cli.main", *args], capture_output=True, text=True, timeout=120, check=False
    )


async def test_cli_creates_lists_and_revokes_keys(warehouse_url: str, reader_url: str, nats_url: str) -> None:
    created = await asyncio.to_thread(cryptoflow, "api-key", "create", "dashboards", "--database-url", warehouse_url)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("cfk_") and len(key) > 40
    listed = await asyncio.to_thread(cryptoflow, "api-key", "list", "--json", "--database-url", warehouse_url)
    assert '"name": "dashboards"' in listed.stdout and key not in listed.stdout
    conn = await asyncpg.connect(warehouse_url)
    try:
        stored = await conn.fetchrow("SELECT * FROM api_keys")
    finally:
        await conn.close()
    assert stored is not None and key not in [str(v) for v in stored.values()]
    with serve(settings(reader_url, nats_url)) as base:
        async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}) as client:
            assert (await client.get("/v1/series")).status_code == 200
            revoked = await asyncio.to_thread(
                cryptoflow, "api-key", "revoke", "dashboards", "--database-url", warehouse_url
            )
            assert revoked.returncode == 0, revoked.stderr
            assert (await client.get("/v1/series")).status_code == 401
    again = await asyncio.to_thread(cryptoflow, "api-key", "revoke", "dashboards", "--database-url", warehouse_url)
    assert again.returncode == 1


async def test_cors_is_off_by_default_and_allows_the_configured_origins(reader_url: str, nats_url: str) -> None:
    preflight = {"Origin": "https://dash.example", "Access-Control-Request-Method": "GET"}
    with serve(settings(reader_url, nats_url)) as base:
        async with httpx.AsyncClient(base_url=base) as client:
            answer = await client.options("/v1/ohlcv", headers=preflight)
            assert "access-control-allow-origin" not in answer.headers
    with serve(settings(reader_url, nats_url, cors_origins="https://dash.example")) as base:
        async with httpx.AsyncClient(base_url=base) as client:
            answer = await client.options("/v1/ohlcv", headers=preflight)
            assert answer.headers["access-control-allow-origin"] == "https://dash.example"
            other = await client.options("/v1/ohlcv", headers={**preflight, "Origin": "https://evil.example"})
            assert "access-control-allow-origin" not in other.headers
