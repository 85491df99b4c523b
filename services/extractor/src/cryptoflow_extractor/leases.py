"""Job leases in a JetStream KV bucket, so that N extractor replicas share the jobs (decision 0042).

The bucket's TTL is the lease time. A lease is the key `job.<job key>` whose value names its owner;
it lives while the owner rewrites it with compare-and-set on its revision, and the server drops it
a TTL after the last rewrite: a replica that dies (kill -9) loses its leases with no one's help. A
replica's heartbeat `replica.<id>` lives the same way; the live replicas are the heartbeats present.

Every replica computes the same assignment of jobs to the live replicas (`assign`) and takes the
leases of its own share when they are free. The owner never sends a request its lease might not
outlive: `check_lease` (called before every exchange request) refuses one when less than the
request's timeout is left, counted from the moment the owner *sent* its last successful rewrite —
the server received it later, so its expiry is later still, whatever the clocks say.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass

import orjson
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

LEASE_PREFIX = "job."
REPLICA_PREFIX = "replica."

Clock = Callable[[], float]


class LeaseLostError(Exception):
    """This replica can no longer be sure it owns the job: it sends no request for it."""


@dataclass
class Lease:
    """A job this replica owns, until `valid_until` (this process's monotonic clock) at the latest."""

    job: str
    revision: int
    valid_until: float

    def remaining(self, clock: Clock = time.monotonic) -> float:
        return self.valid_until - clock()


# The lease of the job whose task is running (unset outside a leased job: backfills, tests).
_held: ContextVar[Lease | None] = ContextVar("cryptoflow_job_lease", default=None)


def hold(lease: Lease) -> None:
    """Run the rest of this task under `lease` (set at the start of the job's task)."""
    _held.set(lease)


def check_lease(needed_s: float, clock: Clock = time.monotonic) -> None:
    """Raise LeaseLostError unless the current job's lease outlives a request of `needed_s`."""
    lease = _held.get()
    if lease is not None and lease.remaining(clock) < needed_s:
        raise LeaseLostError(f"{lease.job}: lease has {lease.remaining(clock):.1f}s left, a request needs {needed_s}s")


def _rank(job: str, replica: str) -> bytes:
    return hashlib.blake2b(f"{job}\x00{replica}".encode(), digest_size=8).digest()


def assign(jobs: Iterable[str], replicas: Iterable[str]) -> dict[str, str]:
    """Each job's replica: rendezvous hashing with bounded load (every replica gets the floor or
    the ceiling of jobs / replicas). The same on every replica for the same sets; when a replica
    leaves, mostly its own jobs move, and when one joins, it takes about its share."""
    job_list = sorted(set(jobs))
    replica_list = sorted(set(replicas))
    if not replica_list:
        return {}
    # Each replica gets `base` jobs, and `extra` of them one more: loads differ by one at most.
    base, extra = divmod(len(job_list), len(replica_list))
    load = dict.fromkeys(replica_list, 0)
    owners: dict[str, str] = {}
    for job in job_list:
        for replica in sorted(replica_list, key=lambda r: _rank(job, r), reverse=True):
            if load[replica] < base or (load[replica] == base and extra > 0):
                if load[replica] == base:
                    extra -= 1
                owners[job] = replica
                load[replica] += 1
                break
    return owners


class LeaseTable:
    """The bucket's leases and heartbeats, as one replica reads and writes them."""

    def __init__(
        self, js: JetStreamContext, kv: KeyValue, bucket: str, replica: str, ttl_s: float, clock: Clock = time.monotonic
    ) -> None:
        self.js = js
        self.kv = kv
        self.bucket = bucket
        self.replica = replica
        self.ttl_s = ttl_s
        self.clock = clock

    def _value(self) -> bytes:
        return orjson.dumps({"owner": self.replica})

    async def heartbeat(self, jobs: int) -> None:
        await self.kv.put(REPLICA_PREFIX + self.replica, orjson.dumps({"replica": self.replica, "jobs": jobs}))

    async def leave(self) -> None:
        try:
            await self.kv.delete(REPLICA_PREFIX + self.replica)
        except Exception:  # leaving is a courtesy: the heartbeat expires anyway
            return

    async def live_replicas(self) -> list[str]:
        live = []
        for replica in await keys_under(self.js, self.bucket, REPLICA_PREFIX):
            try:
                await self.kv.get(REPLICA_PREFIX + replica)
            except KeyNotFoundError:  # left (deleted) or just expired
                continue
            live.append(replica)
        return live

    async def acquire(self, job: str) -> Lease | None:
        """The job's lease when it is free (never held, released, or expired); None when held."""
        sent = self.clock()
        key = LEASE_PREFIX + job
        try:
            revision = await self.kv.create(key, self._value())
        except KeyWrongLastSequenceError:
            # Held. By this very replica's name only if it is this replica restarted (ids are
            # unique per running process): it takes its own lease back without waiting it out.
            try:
                entry = await self.kv.get(key)
            except KeyNotFoundError:
                return None
            if entry.value is None or orjson.loads(entry.value).get("owner") != self.replica:
                return None
            try:
                revision = await self.kv.update(key, self._value(), last=entry.revision)
            except KeyWrongLastSequenceError:
                return None
        return Lease(job, revision, sent + self.ttl_s)

    async def renew(self, lease: Lease) -> bool:
        """Rewrite the lease on its revision; False when it is no longer ours (expired, taken)."""
        sent = self.clock()
        try:
            lease.revision = await self.kv.update(LEASE_PREFIX + lease.job, self._value(), last=lease.revision)
        except KeyWrongLastSequenceError:
            lease.valid_until = sent  # not ours: no request from now on
            return False
        lease.valid_until = sent + self.ttl_s
        return True

    async def release(self, lease: Lease) -> None:
        """Let the job go now (its next owner need not wait for the lease to expire)."""
        lease.valid_until = self.clock()
        try:
            await self.kv.delete(LEASE_PREFIX + lease.job, last=lease.revision)
        except Exception:  # already gone or taken: nothing of ours to release
            return

    async def owners(self) -> dict[str, str]:
        """Every leased job and its owner."""
        return await read_owners(self.js, self.kv, self.bucket)


async def keys_under(js: JetStreamContext, bucket: str, prefix: str) -> list[str]:
    """Keys under `prefix` that have a message (live or deleted), from the stream's subject counts:
    stream info is all the per-service NATS identity may read (no consumer needed)."""
    subject = f"$KV.{bucket}.{prefix}"
    try:
        info = await js.stream_info(f"KV_{bucket}", subjects_filter=f"{subject}>")
    except NotFoundError:
        return []
    return sorted(name.removeprefix(subject) for name in (info.state.subjects or {}))


async def read_owners(js: JetStreamContext, kv: KeyValue, bucket: str) -> dict[str, str]:
    """Every job with a live lease in `bucket`, and the replica that holds it."""
    owners = {}
    for job in await keys_under(js, bucket, LEASE_PREFIX):
        try:
            entry = await kv.get(LEASE_PREFIX + job)
        except KeyNotFoundError:
            continue
        if entry.value:
            owners[job] = str(orjson.loads(entry.value).get("owner", "?"))
    return owners
