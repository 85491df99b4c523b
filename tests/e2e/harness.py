"""Run the real services as OS processes against real servers, and look at what they produced."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import nats
from cryptoflow_cli.processes import SERVICE_MODULES
from cryptoflow_cli.servers import free_port

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    http_port: int

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill9(self) -> None:
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)

    def terminate(self, timeout: float = 30) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        return self.popen.returncode


@dataclass
class Pipeline:
    """One isolated pipeline: its own NATS, database, lake and simulator."""

    nats_url: str
    database_url: str
    lake_url: str
    workdir: Path
    s3_endpoint_url: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    sim_url: str | None = None
    procs: list[Proc] = field(default_factory=list)

    def env(self, name: str) -> dict[str, str]:
        env = {
            **os.environ,
            **S3_ENV,
            "NATS_URL": self.nats_url,
            "DATABASE_URL": self.database_url,
            "LAKE_URL": self.lake_url,
            "LOG_LEVEL": "INFO",
            "EXTRACTOR_POLL_INTERVAL_S": "0.5",
            # One extractor per pipeline unless a test starts more (each with its own id): a restarted
            # one takes its job leases back at once instead of waiting them out.
            "EXTRACTOR_REPLICA_ID": "extractor-0",
            "LAKE_WRITER_BATCH_TIMEOUT_S": "0.3",
            # A killed consumer's unacked messages come back after ack_wait: keep that short here.
            "LAKE_WRITER_ACK_WAIT_S": "3",
            "TRANSFORMER_ACK_WAIT_S": "5",
            "WAREHOUSE_LOADER_ACK_WAIT_S": "5",
        }
        if self.s3_endpoint_url:
            env["S3_ENDPOINT_URL"] = self.s3_endpoint_url
        if self.sim_url:
            env["EXTRACTOR_EXCHANGE_URL"] = self.sim_url
        env.update(self.extra_env)
        return env

    def start(self, name: str, args: list[str] | None = None, env: dict[str, str] | None = None) -> Proc:
        port = free_port()
        log_path = self.workdir / f"{name}-{len(self.procs)}.log"
        full_env = {**self.env(name), f"{name.upper().replace('-', '_')}_HTTP_PORT": str(port), **(env or {})}
        handle = open(log_path, "wb")
        popen = subprocess.Popen(
            [sys.executable, "-m", SERVICE_MODULES[name], *(args or [])],
            env=full_env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
        handle.close()
        proc = Proc(name, popen, log_path, port)
        self.procs.append(proc)
        return proc

    def start_simulator(self, args: list[str]) -> Proc:
        url_file = self.workdir / f"sim-{len(self.procs)}.url"
        proc = self.start("exchange-sim", [*args, "--port", "0", "--url-file", str(url_file)])
        deadline = time.monotonic() + 20
        while not (url_file.exists() and url_file.read_text().strip()):
            if proc.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"simulator did not start:\n{proc.log()}")
            time.sleep(0.05)
        self.sim_url = url_file.read_text().strip()
        return proc

    def start_all(self) -> dict[str, Proc]:
        return {name: self.start(name) for name in ("warehouse-loader", "transformer", "lake-writer", "extractor")}

    def stop_all(self, timeout: float = 30) -> None:
        """SIGTERM to every process at once, then wait for each (SIGKILL after `timeout`): each
        service's graceful shutdown takes a moment, and one after the other adds them up."""
        running = [proc for proc in reversed(self.procs) if proc.popen.poll() is None]
        for proc in running:
            proc.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in running:
            try:
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait(10)

    def logs(self) -> str:
        return "\n".join(f"===== {p.name} ({p.log_path.name}) =====\n{p.log()[-6000:]}" for p in self.procs)

    async def wait_for(
        self, what: str, probe: Callable[[], Awaitable[bool]], timeout: float = 90, interval: float = 0.3
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await probe():
                return
            for proc in self.procs:
                code = proc.popen.poll()
                if code is not None and code not in (0, -9, -15) and proc.name != "exchange-sim":
                    raise AssertionError(f"{proc.name} exited with {code} while waiting for {what}\n{self.logs()}")
            await asyncio.sleep(interval)
        raise AssertionError(f"timed out waiting for {what}\n{self.logs()}")

    async def simulator_stats(self) -> dict[str, Any]:
        """The simulator's `/_sim/stats`: what it was asked, and how."""
        assert self.sim_url, "no simulator started"
        async with aiohttp.ClientSession() as session, session.get(f"{self.sim_url}/_sim/stats") as response:
            stats: dict[str, Any] = await response.json()
        return stats

    async def ohlcv_count(self) -> int:
        return int(await self.fetchval("SELECT count(*) FROM ohlcv", default=0))

    async def fetchval(self, sql: str, *args: Any, default: Any = None) -> Any:
        conn = await asyncpg.connect(self.database_url)
        try:
            return await conn.fetchval(sql, *args)
        except asyncpg.UndefinedTableError:
            return default
        finally:
            await conn.close()

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.database_url)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    async def drained(self, consumers: Sequence[tuple[str, str]]) -> bool:
        """Has every (stream, durable) settled everything: nothing pending, nothing unacked?
        False, not an error, while NATS or a consumer is not there (a restart)."""
        try:
            nc = await nats.connect(self.nats_url.split(","))
        except Exception:
            return False
        try:
            js = nc.jetstream()
            for stream, durable in consumers:
                info = await js.consumer_info(stream, durable)
                if info.num_pending or info.num_ack_pending:
                    return False
            return True
        except Exception:
            return False
        finally:
            await nc.close()

    async def stream_messages(self, stream: str) -> list[nats.aio.msg.Msg]:
        """Every message in a stream, read with a throwaway ordered consumer."""
        nc = await nats.connect(self.nats_url.split(","))
        try:
            js = nc.jetstream()
            info = await js.stream_info(stream)
            count = info.state.messages
            if count == 0:
                return []
            sub = await js.subscribe("cryptoflow.>", stream=stream, ordered_consumer=True)
            msgs = []
            try:
                while len(msgs) < count:
                    msgs.append(await sub.next_msg(timeout=5))
            finally:
                await sub.unsubscribe()
            return msgs
        finally:
            await nc.close()
