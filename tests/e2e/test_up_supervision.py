"""Issue 15, finding 6: `cryptoflow up` supervises its stack. A service killed with SIGKILL is
restarted and the data keeps flowing; a killed nats-server or PostgreSQL is restarted in place
and the services carry on; a server that cannot come back stops the stack with a message naming
it and its log, and a non-zero exit code."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import nats
import psutil
import pytest
from cryptoflow_cli.access import ADMIN
from cryptoflow_contracts import Stream
from cryptoflow_runtime.nats_auth import inbox_prefix, server_urls

from .harness import S3_ENV
from .test_cryptoflow_up import stop_up, wait_for_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]


@pytest.fixture
def up_home() -> Iterator[Path]:
    """The stack's home, outside pytest's basetemp: a concurrent pytest session resets that root
    to 0700, and PostgreSQL restarted as its own account (when we are root) must still reach its
    data dir."""
    with tempfile.TemporaryDirectory(prefix="cryptoflow-up-", ignore_cleanup_errors=True) as root:
        yield Path(root) / "home"


def launch_up(home: Path, log: Path, *options: str) -> subprocess.Popen[bytes]:
    """A small stack (one exchange, one symbol, every dataset), polling every second."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "LAKE_URL", "S3_ENDPOINT_URL", "NATS_URL")}
    since = (datetime.now(UTC) - timedelta(minutes=30)).replace(second=0, microsecond=0)
    argv = ["up", "--exchanges", "binance", "--symbols", "BTC/USDT", "--since", since.isoformat()]
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cryptoflow_cli.main", *argv, "--poll-interval", "1", *options],
            env={**env, **S3_ENV, "CRYPTOFLOW_HOME": str(home)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def log_shows(log: Path, pattern: str, timeout: float = 60, since: int = 0) -> re.Match[str]:
    """The first line of `up`'s output (after character `since`) matching `pattern` (a regex), waiting for it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace")[since:].splitlines():
            if line.startswith("cryptoflow up") or line.startswith(("nats-server ", "postgres ")):
                if found := re.search(pattern, line):
                    return found
        await asyncio.sleep(0.2)
    raise AssertionError(f"no line matching {pattern!r} after {timeout}s:\n{log.read_text()[-5000:]}")


async def rows(database_url: str, table: str) -> int:
    try:
        conn = await asyncpg.connect(database_url, timeout=2)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return -1
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
    except asyncpg.PostgresError:
        return -1
    finally:
        await conn.close()


async def rows_grow(database_url: str, log: Path, table: str = "batches", by: int = 10, timeout: float = 60) -> int:
    """Wait until `table` has `by` rows more than when first seen (the ledger: a loaded batch per
    dataset and poll, i.e. every second, as long as data flows end to end)."""
    start = count = -1
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        count = await rows(database_url, table)
        if start < 0:
            start = count
        elif count >= start + by:
            return count
        await asyncio.sleep(0.5)
    raise AssertionError(f"{table}: {start} → {count} rows in {timeout}s; the stack stalled\n{log.read_text()[-5000:]}")


async def all_ready(stack: dict[str, object], timeout: float = 60) -> None:
    urls = [str(s["metrics_url"]).replace("/metrics", "/readyz") for s in stack["services"].values()]  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            statuses = []
            for url in urls:
                try:
                    async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                        statuses.append(response.status)
                except aiohttp.ClientError:
                    statuses.append(0)
            if statuses == [200] * len(urls):
                return
            await asyncio.sleep(0.5)
    raise AssertionError(f"not every service ready again after {timeout}s: {dict(zip(urls, statuses, strict=True))}")


def alive(pid: int) -> bool:
    return psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE


@dataclass
class Supervised:
    """One `cryptoflow up` that the supervision tests below fault one after the other (a stack
    takes ~15 s to start and stop; the faults are independent once the data flows again)."""

    home: Path
    log: Path
    proc: subprocess.Popen[bytes]
    stack: dict[str, object]

    @property
    def database_url(self) -> str:
        return str(self.stack["database_url"])

    def mark(self) -> int:
        """Where the log ends now: what a test looks for must come after its own fault."""
        return len(self.log.read_text(errors="replace"))

    def since(self, mark: int) -> str:
        return self.log.read_text(errors="replace")[mark:]

    def postgres_pid(self) -> int:
        return int((self.home / "postgres" / "postmaster.pid").read_text().split()[0])

    def nats_pid(self) -> int:
        """The running nats-server's pid: from the start banner, or its latest restart."""
        pids = re.findall(
            r"^nats-server\s+\| \S+ \(pid (\d+)\)|nats-server restarted \(pid (\d+)", self.log.read_text(), re.M
        )
        return int(next(p for pair in reversed(pids) for p in pair if p))


@pytest.fixture(scope="module")
def supervised(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Supervised]:
    # The home outside pytest's basetemp: see `up_home`.
    with tempfile.TemporaryDirectory(prefix="cryptoflow-up-", ignore_cleanup_errors=True) as root:
        home = Path(root) / "home"
        log = tmp_path_factory.mktemp("supervised") / "up.log"
        proc = launch_up(home, log)
        try:
            yield Supervised(home, log, proc, wait_for_stack(home, proc, log))
        finally:
            if proc.poll() is None:
                stop_up(proc, log)


async def flowing(up: Supervised) -> None:
    """The precondition of every fault: the stack runs and data reaches the warehouse."""
    assert up.proc.poll() is None, up.log.read_text()[-5000:]
    await rows_grow(up.database_url, up.log)


async def killed_and_restarted(up: Supervised, server: str, pid: int) -> int:
    """Kill `server` with SIGKILL and wait for the supervisor to say it is gone and restarted;
    returns where the log stood at the kill."""
    mark = up.mark()
    os.kill(pid, signal.SIGKILL)
    await log_shows(up.log, rf"{server} \(pid {pid}\) is gone; restarting it on the same port", since=mark)
    await log_shows(up.log, rf"{server} restarted \(pid \d+, port \d+\)", since=mark)
    return mark


async def test_up_restarts_a_service_killed_with_sigkill_and_the_data_keeps_flowing(supervised: Supervised) -> None:
    up = supervised
    await flowing(up)
    old_pid = int(up.stack["services"]["lake-writer"]["pid"])  # type: ignore[index]
    mark = up.mark()
    os.kill(old_pid, signal.SIGKILL)

    await log_shows(up.log, r"lake-writer exited with code -9; restarting in 1 s \(restart 1\)", since=mark)
    new_pid = int((await log_shows(up.log, r"lake-writer restarted \(pid (\d+)\)", since=mark))[1])
    assert new_pid != old_pid and alive(new_pid)
    recorded = json.loads((up.home / "stack.json").read_text())["services"]["lake-writer"]["pid"]
    assert recorded == new_pid
    await rows_grow(up.database_url, up.log)  # through the restarted lake-writer
    assert up.proc.poll() is None


async def test_up_restarts_a_killed_nats_server_and_the_services_reconnect(supervised: Supervised) -> None:
    up = supervised
    await flowing(up)
    mark = await killed_and_restarted(up, "nats-server", up.nats_pid())
    await all_ready(up.stack)
    await rows_grow(up.database_url, up.log)
    # They reconnected; none had to be restarted for it.
    assert "exited with code" not in up.since(mark)
    assert up.proc.poll() is None


async def test_up_restarts_a_killed_postgres_and_the_loader_carries_on(supervised: Supervised) -> None:
    up = supervised
    await flowing(up)
    # The postmaster alone: its backends linger a moment.
    mark = await killed_and_restarted(up, "postgres", up.postgres_pid())
    await rows_grow(up.database_url, up.log)
    await all_ready(up.stack)
    assert "exited with code" not in up.since(mark)
    assert up.proc.poll() is None


async def test_up_stops_cleanly_with_a_non_zero_code_when_postgres_cannot_come_back(supervised: Supervised) -> None:
    """Last of the module: it ends the shared stack."""
    up = supervised
    await flowing(up)
    services = json.loads((up.home / "stack.json").read_text())["services"]
    pids = [int(s["pid"]) for s in services.values()]
    pg_pid = up.postgres_pid()
    # Read at start only: the running server does not notice, a restarted one cannot start.
    conf = up.home / "postgres" / "postgresql.conf"
    conf.rename(conf.with_suffix(".moved"))
    os.kill(pg_pid, signal.SIGKILL)

    code = await asyncio.to_thread(up.proc.wait, 90)
    output = up.log.read_text()
    assert code == 1, output[-5000:]
    assert re.search(
        rf"postgres could not be restarted after 5 attempts \(.*\); see its log {re.escape(str(up.home))}/postgres/postgres.log; stopping the stack",
        output,
    ), output[-5000:]
    assert output.rstrip().endswith("cryptoflow up    | stopped")
    assert not (up.home / "stack.json").exists()
    assert not [pid for pid in pids if alive(pid)]


async def test_up_runs_a_three_node_nats_cluster_that_rides_out_a_lost_node(up_home: Path, tmp_path: Path) -> None:
    """`cryptoflow up --nats-cluster 3`: three routed nats-servers (route ports closed to servers
    without the stack's route password), every stream at 3 replicas, the services given every
    server; one node killed with -9 is restarted by the supervisor and no service notices."""
    log = tmp_path / "up.log"
    proc = launch_up(up_home, log, "--nats-cluster", "3")
    try:
        stack = wait_for_stack(up_home, proc, log, timeout=120)
        database_url = str(stack["database_url"])
        nodes = re.findall(r"^nats-server\s+\| (\S+) \(pid (\d+)\)", log.read_text(), re.MULTILINE)
        assert len(nodes) == 3, log.read_text()[-3000:]
        assert len(server_urls(str(stack["nats_url"]))) == 3
        nc = await nats.connect(server_urls(str(stack["nats_url"])), inbox_prefix=inbox_prefix(ADMIN))
        try:
            js = nc.jetstream()
            for stream in Stream:
                info = await js.stream_info(stream.value)
                assert info.config.num_replicas == 3, stream
                assert info.cluster is not None and len(info.cluster.replicas or []) == 2, stream
        finally:
            await nc.close()
        conf = (up_home / "nats" / "n1" / "nats-server.conf").read_text()
        route_password = json.loads((up_home / "credentials.json").read_text())["nats"]["route"]
        assert "$NATS_ROUTE_PASSWORD" in conf and route_password not in conf
        await rows_grow(database_url, log)

        victim = int(nodes[0][1])
        os.kill(victim, signal.SIGKILL)
        await log_shows(log, rf"nats-server \(pid {victim}\) is gone; restarting it on the same port")
        await rows_grow(database_url, log)
        await all_ready(stack)
        assert "exited with code" not in log.read_text()
        assert proc.poll() is None
    finally:
        stop_up(proc, log)
