"""`cryptoflow up` runs the read API beside the stages, with the read-only identities: its URL is
in stack.json, a key made by `cryptoflow api-key create` reads the candles the stack loaded, it is
ready (PostgreSQL as the reader, NATS as `consumer`), and a live client gets the stack's silver
events."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from .harness import S3_ENV
from .test_cryptoflow_up import rows_when_caught_up, start_up, stop_up, wait_for_stack


@pytest.mark.e2e
async def test_up_serves_the_api_with_read_only_identities(tmp_path: Path) -> None:
    home = tmp_path / "home"
    log = tmp_path / "up.log"
    since = (datetime.now(UTC) - timedelta(minutes=30)).replace(second=0, microsecond=0)
    proc = start_up(home, log, since)
    try:
        stack = wait_for_stack(home, proc, log)
        api_url = str(stack["api_url"])
        assert "api" in stack["services"]  # type: ignore[operator]
        await rows_when_caught_up(str(stack["database_url"]), 10)
        created = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "cryptoflow_cli.main", "api-key", "create", "e2e"],
            env={**os.environ, **S3_ENV, "CRYPTOFLOW_HOME": str(home)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert created.returncode == 0, created.stderr
        key = created.stdout.strip().splitlines()[-1]
        async with httpx.AsyncClient(
            base_url=api_url, headers={"Authorization": f"Bearer {key}"}, timeout=60
        ) as client:
            ready = await client.get("/readyz")
            assert ready.status_code == 200, ready.text
            candles = (await client.get("/v1/ohlcv", params={"limit": 5})).json()
            assert len(candles["data"]) == 5 and candles["next_cursor"]
            catalogue = (await client.get("/v1/series", params={"table": "ohlcv"})).json()["data"]
            assert catalogue and all(row["rows_received"] > 0 for row in catalogue)
            # Live through NATS' consumer identity: the next silver batch of the running stack.
            async with client.stream("GET", "/v1/stream", params={"subjects": "cryptoflow.silver.>"}) as response:
                assert response.status_code == 200
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        assert '"subject":"cryptoflow.silver.' in line
                        break
    finally:
        stop_up(proc, log)
