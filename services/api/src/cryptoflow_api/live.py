"""The live relay: public NATS subjects to SSE and WebSocket clients (decision 0048).

One NATS connection (a subscribe-only identity) for the process; each client gets its own
subscriptions and a bounded queue. NATS hands each message to a callback that only puts it on
that queue without waiting: a client whose queue is full has fallen behind and is dropped, and
no client ever waits on another (nor the NATS connection on any).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import nats
import nats.errors
import orjson
from cryptoflow_runtime.nats_auth import connect_options, server_urls
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from .config import ApiSettings
from .problems import ProblemError

log = logging.getLogger(__name__)


def _tokens(subject: str) -> list[str]:
    return subject.split(".")


def valid_pattern(pattern: str) -> bool:
    tokens = _tokens(pattern)
    if any(not token or any(c in token for c in " \t\r\n") for token in tokens):
        return False
    if any(("*" in t and t != "*") or (">" in t and t != ">") for t in tokens):
        return False
    return ">" not in tokens[:-1]


def covered(requested: str, allowed: str) -> bool:
    """Whether every subject `requested` matches is matched by `allowed` (both NATS patterns)."""
    want, have = _tokens(requested), _tokens(allowed)
    for position, token in enumerate(have):
        if token == ">":
            return len(want) > position
        if position >= len(want):
            return False
        if want[position] == ">":
            return False
        if token != "*" and want[position] != token:
            return False
    return len(want) == len(have)


def check_subjects(requested: list[str], allowed: list[str], most: int) -> list[str]:
    """The requested patterns if each is within the allow-list, else a 400/403 problem."""
    subjects = [s.strip() for s in requested if s.strip()]
    if not subjects:
        raise ProblemError(400, "subjects: at least one subject pattern", kind="invalid-request")
    if len(subjects) > most:
        raise ProblemError(400, f"subjects: at most {most} patterns", kind="invalid-request")
    for subject in subjects:
        if not valid_pattern(subject):
            raise ProblemError(400, f"subjects: {subject!r} is not a NATS subject pattern", kind="invalid-request")
        if not any(covered(subject, pattern) for pattern in allowed):
            raise ProblemError(
                403, f"subjects: {subject!r} is not public; allowed: {', '.join(allowed)}", kind="subject-not-allowed"
            )
    return subjects


@dataclass(frozen=True)
class LiveMessage:
    subject: str
    data: bytes

    def json(self) -> bytes:
        """`{"subject": …, "data": <the event>}`; a body that is not JSON is given as a string."""
        try:
            payload = orjson.loads(self.data)
        except orjson.JSONDecodeError:
            payload = self.data.decode(errors="replace")
        return orjson.dumps({"subject": self.subject, "data": payload})


class LiveClient:
    """One connection's subscriptions and queue."""

    def __init__(self, queue_size: int) -> None:
        self.queue: asyncio.Queue[LiveMessage] = asyncio.Queue(maxsize=queue_size)
        self.dropped = asyncio.Event()
        self._subscriptions: list[Subscription] = []

    async def _on_message(self, msg: Msg) -> None:
        if self.dropped.is_set():
            return
        try:
            self.queue.put_nowait(LiveMessage(msg.subject, msg.data))
        except asyncio.QueueFull:
            # Behind by a whole queue: drop it now rather than let it hold memory or anyone back.
            self.dropped.set()

    async def close(self) -> None:
        for subscription in self._subscriptions:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        self._subscriptions.clear()


class LiveRelay:
    def __init__(self, settings: ApiSettings) -> None:
        self._settings = settings
        self._nc: NatsClient | None = None
        self._connecting: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect in the background: the warehouse routes do not wait for NATS, and the live
        routes answer 503 (and /readyz says not ready) until it is there."""
        self._connecting = asyncio.create_task(self._connect(), name="live-relay-connect")

    async def _connect(self) -> None:
        delay = 0.5
        while True:
            try:
                # One bounded attempt at a time (with unlimited reconnects nats.connect would
                # keep trying the first connection forever); once connected, it reconnects alone.
                self._nc = await asyncio.wait_for(
                    nats.connect(
                        servers=server_urls(self._settings.nats_url),
                        name="cryptoflow-api",
                        max_reconnect_attempts=-1,
                        reconnect_time_wait=1,
                        connect_timeout=5,
                        **connect_options(self._settings),
                    ),
                    timeout=10,
                )
                log.info("live relay connected to NATS")
                return
            except (TimeoutError, OSError, nats.errors.Error) as exc:
                log.warning("NATS not reachable yet; live routes wait", extra={"error": repr(exc), "retry_in_s": delay})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def stop(self) -> None:
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connecting
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.drain()
            self._nc = None

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def open(self, subjects: list[str]) -> LiveClient:
        if self._nc is None or not self._nc.is_connected:
            raise ProblemError(503, "the live relay is not connected to NATS", kind="not-ready")
        client = LiveClient(self._settings.live_queue_messages)
        try:
            for subject in subjects:
                client._subscriptions.append(
                    # The callback never waits, so NATS' own per-subscription buffer stays small.
                    await self._nc.subscribe(subject, cb=client._on_message)
                )
            # A round trip: the server has the subscriptions before the client is told it is
            # subscribed, so nothing published after that is missed.
            await self._nc.flush(timeout=5)
        except Exception:
            await client.close()
            raise
        return client
