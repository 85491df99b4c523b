"""Service processes of a local stack: launched with their env, output prefixed by name."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from dataclasses import dataclass, field

from .stages import MODULES

# Each service runs as `python -m <module>` so the stack works from any venv, PATH or not.
SERVICE_MODULES = MODULES
_WIDTH = len("warehouse-loader")


@dataclass
class ServiceProcess:
    stage: str
    args: list[str]
    env: dict[str, str]
    replica: int = 0  # which process of its stage (`cryptoflow up --replicas`)
    proc: asyncio.subprocess.Process | None = None
    _pumps: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def name(self) -> str:
        """`transformer` for a stage's first process, `transformer-1`, `transformer-2` for more."""
        return self.stage if self.replica == 0 else f"{self.stage}-{self.replica}"

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            SERVICE_MODULES[self.stage],
            *self.args,
            env={**os.environ, **self.env},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # Ctrl-C reaches `up`, which then stops children in order
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._pumps = [
            asyncio.create_task(self._pump(self.proc.stdout)),
            asyncio.create_task(self._pump(self.proc.stderr)),
        ]

    async def _pump(self, stream: asyncio.StreamReader) -> None:
        prefix = f"{self.name:<{_WIDTH}} | ".encode()
        while line := await stream.readline():
            sys.stdout.buffer.write(prefix + line)
            sys.stdout.buffer.flush()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    async def wait(self) -> int:
        assert self.proc is not None
        code = await self.proc.wait()
        for pump in self._pumps:
            with contextlib.suppress(asyncio.CancelledError):
                await pump
        return code

    async def stop(self, grace_s: float = 30.0) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.wait(), grace_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.wait()
