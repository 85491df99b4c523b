"""`cryptoflow up`'s supervisor on stand-ins for processes and servers: backoff, the messages,
never giving up on a service, giving up on a server after its attempts, stopping on request."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptoflow_cli.servers import ServerStartError
from cryptoflow_cli.supervisor import Backoff, Supervisor

FAST = Backoff(initial_s=0.01, max_s=0.04, reset_after_s=60.0)


def test_backoff_doubles_from_one_second_to_thirty() -> None:
    assert [Backoff().delay(n) for n in range(1, 8)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


@dataclass
class FakeService:
    """Exits with `codes` one after the other (each start runs the next), then runs until stopped."""

    name: str
    codes: list[int]
    starts: int = 0
    pid: int = 100
    _running: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        self.starts += 1
        self.pid += 1

    async def wait(self) -> int:
        if self.codes:
            return self.codes.pop(0)
        await self._running.wait()  # never set: runs for good
        return 0


@dataclass
class FakeServer:
    """Dies after `dies_after` polls; its first `start_fails` starts fail (-1: every one)."""

    name: str
    dies_after: int
    start_fails: int = 0
    polls: int = 0
    attempts: int = 0
    started: bool = False
    pid: int = 7
    port: int = 4222
    log_path: Path = Path("/var/log/fake-server.log")

    @property
    def running(self) -> bool:
        self.polls += 1
        return self.polls <= self.dies_after or self.started

    def start(self) -> None:
        self.attempts += 1
        if self.start_fails < 0 or self.attempts <= self.start_fails:
            raise ServerStartError(f"{self.name} exited with code 1 during startup; log: {self.log_path}")
        self.started = True
        self.pid += 1


def supervisor(services: list[Any], servers: list[Any], stop: asyncio.Event, lines: list[str]) -> Supervisor:
    return Supervisor(services, servers, stop, backoff=FAST, server_attempts=3, poll_s=0.01, report=lines.append)


async def until(condition: Any, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("not reached in time")


async def test_a_service_that_keeps_crashing_is_restarted_every_time_with_growing_pauses() -> None:
    service = FakeService("lake-writer", codes=[-9, 1, 1, 1])
    stop = asyncio.Event()
    lines: list[str] = []
    run = asyncio.create_task(supervisor([service], [], stop, lines).run())
    await until(lambda: service.starts == 4)
    stop.set()
    assert await run == 0
    assert [line for line in lines if "exited" in line] == [
        "lake-writer exited with code -9; restarting in 0.01 s (restart 1)",
        "lake-writer exited with code 1; restarting in 0.02 s (restart 2)",
        "lake-writer exited with code 1; restarting in 0.04 s (restart 3)",
        "lake-writer exited with code 1; restarting in 0.04 s (restart 4)",
    ]
    assert lines[-1] == "lake-writer restarted (pid 104)"


async def test_a_crash_after_a_healthy_run_starts_the_backoff_over(monkeypatch: pytest.MonkeyPatch) -> None:
    service = FakeService("transformer", codes=[1, 1])
    stop = asyncio.Event()
    lines: list[str] = []
    sup = Supervisor([service], [], stop, backoff=Backoff(0.01, 0.04, reset_after_s=0.0), report=lines.append)  # type: ignore[list-item]
    run = asyncio.create_task(sup.run())
    await until(lambda: service.starts == 2)
    stop.set()
    await run
    assert [line.split("; ")[1] for line in lines if "exited" in line] == [
        "restarting in 0.01 s (restart 1)",
        "restarting in 0.01 s (restart 2)",
    ]


async def test_restarted_services_are_reported_for_stack_json() -> None:
    service = FakeService("extractor", codes=[-9])
    stop = asyncio.Event()
    seen: list[tuple[str, int]] = []
    sup = Supervisor([service], [], stop, backoff=FAST, report=lambda _: None)  # type: ignore[list-item]
    sup.restarted = lambda proc: seen.append((proc.name, proc.pid or 0))
    run = asyncio.create_task(sup.run())
    await until(lambda: seen)
    stop.set()
    await run
    assert seen == [("extractor", 101)]


async def test_a_dead_server_is_restarted_in_place() -> None:
    server = FakeServer("nats-server", dies_after=2, start_fails=1)
    stop = asyncio.Event()
    lines: list[str] = []
    run = asyncio.create_task(supervisor([], [server], stop, lines).run())
    await until(lambda: any("restarted" in line for line in lines))
    stop.set()
    assert await run == 0
    assert lines[0].startswith("nats-server (pid 7) is gone; restarting it on the same port and data")
    assert "retrying in 0.01 s (attempt 2/3)" in lines[1]
    assert lines[2] == "nats-server restarted (pid 8, port 4222)"


async def test_a_server_that_cannot_come_back_stops_the_stack_naming_it_and_its_log() -> None:
    server = FakeServer("postgres", dies_after=1, start_fails=-1)
    service = FakeService("warehouse-loader", codes=[])
    stop = asyncio.Event()
    lines: list[str] = []
    code = await asyncio.wait_for(supervisor([service], [server], stop, lines).run(), 10)
    assert code == 1
    assert lines[-1].startswith("postgres could not be restarted after 3 attempts (postgres exited with code 1")
    assert lines[-1].endswith("see its log /var/log/fake-server.log; stopping the stack")


async def test_stop_ends_the_watch_during_a_backoff() -> None:
    service = FakeService("lake-writer", codes=[-9])
    stop = asyncio.Event()
    lines: list[str] = []
    sup = Supervisor([service], [], stop, backoff=Backoff(initial_s=30.0), report=lines.append)  # type: ignore[list-item]
    run = asyncio.create_task(sup.run())
    await until(lambda: lines)
    stop.set()
    assert await asyncio.wait_for(run, 2) == 0
    assert service.starts == 0  # nothing started behind the caller's back
