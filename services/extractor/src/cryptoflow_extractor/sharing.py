"""This replica's share of the jobs: it runs the jobs it holds the lease of, and only those.

Each round (a fifth of the lease time): heartbeat, read the live replicas, compute the assignment,
hand over the jobs now assigned elsewhere (stop the task, then release the lease), renew the rest
(a renewal refused means the lease expired: stop at once), take the free leases of its own share.
A job's task is stopped before its lease is given up, so no request of it can still be in flight
when another replica takes it. Rationale: docs/decisions/0042.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from .leases import Lease, LeaseTable, assign, hold
from .metrics import JOBS_OWNED, LEASE_CHANGES

log = logging.getLogger(__name__)

JobRunner = Callable[[], Coroutine[Any, Any, None]]


class SharedJobs:
    def __init__(self, table: LeaseTable, jobs: Mapping[str, JobRunner], round_s: float) -> None:
        self.table = table
        self.jobs = dict(jobs)
        self.round_s = round_s
        self.running: dict[str, tuple[Lease, asyncio.Task[None]]] = {}

    @property
    def replica(self) -> str:
        return self.table.replica

    async def run(self) -> None:
        while True:
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # NATS unreachable: the leases are not renewed, so check_lease stops this
                # replica's requests before they can expire; the next round tries again.
                log.warning("lease round failed", extra={"replica": self.replica, "error": repr(exc)})
            await asyncio.sleep(self.round_s)

    async def round(self) -> None:
        await self.table.heartbeat(len(self.running))
        live = {*await self.table.live_replicas(), self.replica}
        mine = {job for job, owner in assign(self.jobs, live).items() if owner == self.replica}
        moved = sorted(set(self.running) - mine)
        if moved:
            leases = [self.running[job][0] for job in moved]
            await self._stop(*moved)
            await asyncio.gather(*(self.table.release(lease) for lease in leases))
            LEASE_CHANGES.labels("handed_over").inc(len(moved))
            log.info("jobs handed over", extra={"replica": self.replica, "jobs": moved, "replicas": sorted(live)})
        for job in sorted(self.running):
            if not await self.table.renew(self.running[job][0]):
                await self._stop(job)
                LEASE_CHANGES.labels("lost").inc()
                log.warning("job lease lost", extra={"replica": self.replica, "job": job})
        taken = []
        for job in sorted(mine - set(self.running)):
            acquired = await self.table.acquire(job)
            if acquired is not None:
                self.running[job] = (acquired, asyncio.create_task(self._run(acquired, self.jobs[job])))
                LEASE_CHANGES.labels("taken").inc()
                taken.append(job)
        if taken:
            log.info("jobs taken", extra={"replica": self.replica, "jobs": taken, "replicas": sorted(live)})
        JOBS_OWNED.set(len(self.running))

    @staticmethod
    async def _run(lease: Lease, runner: JobRunner) -> None:
        hold(lease)  # this task's exchange requests check this lease first
        await runner()

    async def _stop(self, *jobs: str) -> None:
        """Stop `jobs` together (a replica leaving stops all of its jobs at once)."""
        entries = [self.running.pop(job) for job in jobs]
        for lease, _ in entries:
            lease.valid_until = self.table.clock()  # fenced first: not one more request, whatever happens
        # Cancelled until done: on Python 3.11 a cancel that lands as an inner wait_for completes
        # (a JetStream publish ack) can be swallowed (CPython gh-86296), and the task would poll
        # on, refused by its fence, forever.
        tasks = {task for _, task in entries}
        while pending := {task for task in tasks if not task.done()}:
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=1.0)
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                task.result()

    async def stop(self) -> None:
        """Stop every job, then give their leases up and leave: the others take over at once."""
        leases = [lease for lease, _ in self.running.values()]
        await self._stop(*self.running)
        await asyncio.gather(*(self.table.release(lease) for lease in leases))
        await self.table.leave()
        JOBS_OWNED.set(0)
