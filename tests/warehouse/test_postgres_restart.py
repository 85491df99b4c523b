"""PostgreSQL restarted in the middle of a backlog: the loader holds, waits, resumes; every table
ends with exactly its rows — nothing lost, nothing doubled, nothing dead-lettered."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from cryptoflow_cli.servers import ServerProcess, start_postgres
from cryptoflow_runtime.lake import FileLake
from cryptoflow_warehouse_loader.tables import TABLES
from e2e.harness import Pipeline

from .support import LoaderStack, create_streams, put_batch, sample

BATCHES_PER_TABLE = 12
ROWS_PER_BATCH = 2000


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[ServerProcess]:
    with start_postgres(tmp_path / "pgdata", fast_unsafe=True) as server:
        yield server


async def test_restart_postgres_mid_load(own_postgres: ServerProcess, fresh_nats_url: str, tmp_path: Path) -> None:
    workdir = tmp_path / "pipeline"
    workdir.mkdir()
    pipe = Pipeline(
        nats_url=fresh_nats_url,
        database_url=own_postgres.url,
        lake_url=f"file://{tmp_path / 'lake'}",
        workdir=workdir,
        extra_env={"WAREHOUSE_LOADER_ALERT_RULES": "[]", "WAREHOUSE_LOADER_MAINTENANCE_INTERVAL_S": "0.5"},
    )
    stack = LoaderStack(pipe=pipe, lake=FileLake(pipe.lake_url))
    try:
        await create_streams(fresh_nats_url)
        # A backlog of every table, interleaved, plus one batch delivered twice.
        batches = []
        for n in range(BATCHES_PER_TABLE):
            for table in TABLES:
                rows = sample(table, ROWS_PER_BATCH, symbol="RST/USDT", start=n * ROWS_PER_BATCH)
                batches.append(await put_batch(stack.lake, table, rows, f"{table}-{n}"))
        for batch in batches:
            await stack.publish_batch(batch)
        await stack.publish_batch(batches[3], msg_id="redelivered")
        pipe.start("warehouse-loader")

        async def ledgered() -> int:
            return int(await pipe.fetchval("SELECT count(*) FROM batches", default=0) or 0)

        async def some_loaded() -> bool:
            return await ledgered() >= 5

        await pipe.wait_for("the first batches", some_loaded, interval=0.05)
        own_postgres.restart()
        restarted_at = await ledgered()
        assert restarted_at < len(batches), "the backlog was loaded before the restart; the test proves nothing"

        async def all_loaded() -> bool:
            return await ledgered() == len(batches)

        await pipe.wait_for("every batch after the restart", all_loaded, timeout=120)
        await stack.settled()
        expected = BATCHES_PER_TABLE * ROWS_PER_BATCH
        for table in TABLES:
            assert await pipe.fetchval(f'SELECT count(*) FROM "{table}"') == expected, table
            inserted = await pipe.fetchval("SELECT sum(rows_inserted) FROM batches WHERE target_table = $1", table)
            assert inserted == expected, table
        assert [d for d in await stack.dead_letters() if d["stage"] == "warehouse-loader"] == []
        assert "warehouse unreachable" in pipe.procs[0].log()
    finally:
        pipe.stop_all()


async def test_the_loader_is_not_ready_while_its_database_is_down(
    own_postgres: ServerProcess, fresh_nats_url: str, tmp_path: Path
) -> None:
    """Issue 15, finding 6: the loader answered /readyz 200 with its database down."""
    workdir = tmp_path / "pipeline"
    workdir.mkdir()
    pipe = Pipeline(
        nats_url=fresh_nats_url,
        database_url=own_postgres.url,
        lake_url=f"file://{tmp_path / 'lake'}",
        workdir=workdir,
        extra_env={"WAREHOUSE_LOADER_ALERT_RULES": "[]"},
    )
    try:
        loader = pipe.start("warehouse-loader")
        url = f"http://127.0.0.1:{loader.http_port}/readyz"

        async def ready_is(expected: int) -> bool:
            async with aiohttp.ClientSession() as session:
                try:
                    async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                        return response.status == expected
                except aiohttp.ClientError:
                    return False

        await pipe.wait_for("ready with the database up", lambda: ready_is(200), timeout=60)
        own_postgres.stop()
        await pipe.wait_for("not ready with the database down", lambda: ready_is(503), timeout=30)
        own_postgres.start()
        await pipe.wait_for("ready again once it is back", lambda: ready_is(200), timeout=30)
        assert loader.popen.poll() is None  # it waited; it did not exit
    finally:
        pipe.stop_all()
