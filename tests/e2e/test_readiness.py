"""Issue 15, finding 6 (readiness): every service answers /readyz 503 while NATS is away, and
200 again once it is back, without exiting meanwhile (the loader's database: warehouse tests)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from cryptoflow_cli.servers import start_nats

from .harness import Pipeline, Proc

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z


async def readiness(procs: list[Proc]) -> dict[str, int]:
    statuses = {}
    async with aiohttp.ClientSession() as session:
        for proc in procs:
            try:
                url = f"http://127.0.0.1:{proc.http_port}/readyz"
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                    statuses[proc.name] = response.status
            except aiohttp.ClientError:
                statuses[proc.name] = 0
    return statuses


@pytest.mark.e2e
async def test_every_service_is_not_ready_while_nats_is_down_and_ready_once_it_is_back(
    fresh_database_url: str, tmp_path: Path
) -> None:
    workdir = tmp_path / "pipeline"
    workdir.mkdir()
    with start_nats(tmp_path / "nats") as nats_server:
        pipe = Pipeline(
            nats_url=nats_server.url,
            database_url=fresh_database_url,
            lake_url=f"file://{tmp_path / 'lake'}",
            workdir=workdir,
        )
        try:
            pipe.start_simulator(
                ["--symbols", "BTC/USDT", "--seed", "7", "--start", str(T0), "--end", str(T0 + 3_600_000)]
            )
            pipe.extra_env.update({"EXTRACTOR_SYMBOLS": "BTC/USDT", "EXTRACTOR_SINCE": "2024-01-01T00:00:00Z"})
            services = list(pipe.start_all().values())

            async def all_are(status: int) -> bool:
                return set((await readiness(services)).values()) == {status}

            await pipe.wait_for("every service ready", lambda: all_are(200), timeout=90)
            nats_server.stop()
            await pipe.wait_for("every service not ready without NATS", lambda: all_are(503), timeout=30)
            nats_server.start()
            await pipe.wait_for("every service ready again", lambda: all_are(200), timeout=60)
            assert [p.name for p in services if p.popen.poll() is not None] == []
        finally:
            pipe.stop_all()
