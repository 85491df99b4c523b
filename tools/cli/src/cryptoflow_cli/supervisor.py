"""What `cryptoflow up` does once the stack runs: watch every process and bring back what dies.

* A service (or the simulator) that exits is started again after a backoff: 1 s, doubling to
  30 s while it keeps crashing; a run of `Backoff.reset_after_s` counts as healthy, and the next
  crash starts over at 1 s. It is never given up on: however often it crashes, it is restarted,
  and each restart is announced (`lake-writer exited with code -9; restarting in 1 s (restart 1)`).
* A server (nats-server, PostgreSQL) that dies is started again in place (same port, same data
  dir, same options; the services reconnect by themselves). When it cannot come back after
  `server_attempts` tries, the stack is stopped with a message naming the server and its log,
  and `up` exits non-zero: a stack without its broker or database is not "up".

Ctrl-C/SIGTERM ends the watch; a restart already under way is finished first, so the caller's
ordered shutdown stops every live process and none is started behind its back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .processes import ServiceProcess
from .servers import ServerProcess
from .stackfile import StackInfo, write_stack

T = TypeVar("T")


def say(text: str) -> None:
    print(f"cryptoflow up    | {text}", flush=True)


@dataclass(frozen=True)
class Backoff:
    """Pauses before restarts in a row: `initial_s`, doubling, at most `max_s`."""

    initial_s: float = 1.0
    max_s: float = 30.0
    # A process that ran this long was healthy: its next crash is a first one again.
    reset_after_s: float = 60.0

    def delay(self, in_a_row: int) -> float:
        return float(min(self.initial_s * 2 ** max(in_a_row - 1, 0), self.max_s))


class Supervisor:
    def __init__(
        self,
        services: list[ServiceProcess],
        servers: list[ServerProcess],
        stop: asyncio.Event,
        *,
        backoff: Backoff | None = None,
        server_attempts: int = 5,
        poll_s: float = 0.5,
        restarted: Callable[[ServiceProcess], None] | None = None,
        report: Callable[[str], None] = say,
    ) -> None:
        self.services = services
        self.servers = servers
        self.stop = stop
        self.backoff = backoff or Backoff()
        self.server_attempts = server_attempts
        self.poll_s = poll_s
        self.restarted = restarted
        self.report = report
        self.restarts: dict[str, int] = {}
        self.exit_code = 0
        # (Re)starts under way: awaited before `run` returns, never abandoned half-done.
        self._starting: set[asyncio.Future[Any]] = set()

    async def run(self) -> int:
        """Watch until `stop` is set (0) or a server cannot be brought back (1)."""
        watchers = [asyncio.create_task(self._watch_service(proc)) for proc in self.services]
        watchers += [asyncio.create_task(self._watch_server(server)) for server in self.servers]
        stopper = asyncio.create_task(self.stop.wait())
        try:
            # A watcher returns only when its server is lost for good.
            await asyncio.wait([stopper, *watchers], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (stopper, *watchers):
                task.cancel()
            await asyncio.gather(stopper, *watchers, return_exceptions=True)
            if self._starting:
                await asyncio.gather(*self._starting, return_exceptions=True)
        return self.exit_code

    async def _started(self, start: Awaitable[T]) -> T:
        """`start` run to its end even when the watch is cancelled meanwhile."""
        future = asyncio.ensure_future(start)
        self._starting.add(future)
        future.add_done_callback(self._starting.discard)
        return await asyncio.shield(future)

    async def _stopped_within(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)
        return self.stop.is_set()

    async def _watch_service(self, proc: ServiceProcess) -> None:
        in_a_row = 0
        started = time.monotonic()
        while True:
            code = await proc.wait()
            if self.stop.is_set():
                return
            in_a_row = 1 if time.monotonic() - started >= self.backoff.reset_after_s else in_a_row + 1
            delay = self.backoff.delay(in_a_row)
            restarts = self.restarts[proc.name] = self.restarts.get(proc.name, 0) + 1
            self.report(f"{proc.name} exited with code {code}; restarting in {delay:g} s (restart {restarts})")
            if await self._stopped_within(delay):
                return
            started = time.monotonic()
            try:
                await self._started(proc.start())
            except OSError as exc:
                # Not started: `wait` returns the old exit code at once, and the backoff grows.
                self.report(f"{proc.name} could not be started: {exc}")
                continue
            self.report(f"{proc.name} restarted (pid {proc.pid})")
            if self.restarted is not None:
                self.restarted(proc)

    async def _watch_server(self, server: ServerProcess) -> None:
        while True:
            if await self._stopped_within(self.poll_s):
                return
            if server.running:
                continue
            self.report(
                f"{server.name} (pid {server.pid}) is gone; restarting it on the same port and data (log: {server.log_path})"
            )
            if not await self._restart_server(server):
                return

    async def _restart_server(self, server: ServerProcess) -> bool:
        for attempt in range(1, self.server_attempts + 1):
            try:
                await self._started(asyncio.to_thread(server.start))
            except (RuntimeError, OSError) as exc:  # ServerStartError is a RuntimeError
                # The first line, without the log path ServerStartError ends it with: named below.
                reason = str(exc).splitlines()[0].split("; log: ")[0]
                if attempt == self.server_attempts:
                    self.report(
                        f"{server.name} could not be restarted after {attempt} attempts ({reason}); "
                        f"see its log {server.log_path}; stopping the stack"
                    )
                    self.exit_code = 1
                    return False
                delay = self.backoff.delay(attempt)
                self.report(
                    f"{server.name} did not come back ({reason}); "
                    f"retrying in {delay:g} s (attempt {attempt + 1}/{self.server_attempts})"
                )
                if await self._stopped_within(delay):
                    return True
                continue
            self.report(f"{server.name} restarted (pid {server.pid}, port {server.port})")
            return True
        return True


def pid_updater(home: Path, info: StackInfo) -> Callable[[ServiceProcess], None]:
    """Keeps stack.json's service PIDs current across restarts."""

    def update(proc: ServiceProcess) -> None:
        if proc.name in info.services:
            info.services[proc.name]["pid"] = proc.pid
            write_stack(home, info)

    return update
