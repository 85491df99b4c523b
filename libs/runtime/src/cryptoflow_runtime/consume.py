"""The one consume path: decode, handle, settle — written once for every durable consumer.

A stage declares what it consumes (`Consumer`: the event type, its stream and durable, the
delivery policy) and writes a typed handler, `async def on_batch(batch: BatchReady) -> None`,
or for a batch consumer `async def on_raw(snapshots: list[RawSnapshot]) -> Sequence[Outcome]`
(one outcome per event: `None` when its side effect is durable, or the exception that stopped
it). Everything else lives here, the same for all of them (decision 0002):

* decoding into the event type; undecodable input is poison (dead-lettered on first delivery);
* timing, the processed/failed counters;
* settling: ack after the handler returned, `settle_failure` (nak with backoff, or dead-letter
  once retries are spent or the error is permanent) when it raised; a DeadLetter too large for
  NATS keeps an excerpt and points at the full input, written to the lake (`spill`). Each message of a fetched
  batch is settled on its own: one message never fails its neighbours.

`deliver` runs the same path over messages fetched elsewhere (replay, tests), so an offline run
of a stage settles exactly as the live consumer does.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from cryptoflow_contracts import STREAM_SUBJECTS, Dataset, Event, Stage, Stream
from faststream.nats import NatsBroker
from nats.aio.msg import Msg
from pydantic import ValidationError

from .dead_letters import PoisonMessageError, permanent, settle_failure
from .lake import Lake
from .metrics import BATCH_SIZE, HANDLER_SECONDS, MESSAGES_PROCESSED

log = logging.getLogger(__name__)

E = TypeVar("E", bound=Event)
Outcome = BaseException | None
EventHandler = Callable[[E], Awaitable[None]]
BatchHandler = Callable[[list[E]], Awaitable[Sequence[Outcome]]]

_delivery: contextvars.ContextVar[tuple[Msg, ...]] = contextvars.ContextVar("cryptoflow_delivery")


async def in_progress() -> None:
    """Tell the server the messages being handled (one, or a batch consumer's batch) are still
    being worked on (resets their ack wait).

    For handlers whose side effect may wait on a dependency (a database coming back). A no-op
    outside a delivery.
    """
    msgs = _delivery.get(())
    if msgs:
        await asyncio.gather(*(msg.in_progress() for msg in msgs))


@dataclass(frozen=True)
class Consumer(Generic[E]):
    """What a stage consumes and how: one durable pull consumer on `stream`, filtered by `subject`."""

    event: type[E]
    stage: Stage
    durable: str
    ack_wait_s: float
    max_deliver: int
    title: str
    description: str
    stream: Stream | None = None  # default: the event's own stream
    subject: str | None = None  # default: the stream's whole namespace
    batch_size: int = 1
    fetch_timeout_s: float = 1.0
    max_ack_pending: int | None = None

    @property
    def input_stream(self) -> Stream:
        return self.stream or self.event.STREAM

    @property
    def filter_subject(self) -> str:
        return self.subject or STREAM_SUBJECTS[self.input_stream]


def decode(event: type[E], data: bytes) -> E:
    """The message as its event, or PoisonMessageError naming what is wrong with it."""
    try:
        return event.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "message"
        raise PoisonMessageError(f"not a {event.__name__}: {first['msg']} at {where}") from exc


class Released(Exception):
    """A handler lets go of its message unprocessed because its service is stopping (it was
    waiting for a dependency that is down): the message goes back at once for the next consumer,
    and is neither a failure nor a retry."""


def dataset_of(event: Event | None) -> Dataset | None:
    dataset = getattr(event, "dataset", None)
    return dataset if isinstance(dataset, Dataset) else None


async def settle(
    broker: NatsBroker,
    consumer: Consumer[E],
    msg: Msg,
    event: E | None,
    outcome: Outcome,
    service: str,
    spill: Lake | None = None,
) -> None:
    """Ack a message whose side effect is durable; otherwise retry it later or dead-letter it."""
    if outcome is None:
        await msg.ack()
        dataset = dataset_of(event)
        MESSAGES_PROCESSED.labels(service, dataset.value if dataset else "unknown").inc()
        return
    if isinstance(outcome, Released):
        log.info("message released unprocessed", extra={"stage": consumer.stage.value, "reason": str(outcome)})
        await msg.nak()
        return
    if permanent(outcome) is None:  # a permanent error is reported by its DeadLetter, not a traceback
        log.warning(
            "handling failed",
            extra={"stage": consumer.stage.value, "error": repr(outcome)},
            exc_info=outcome,
        )
    await settle_failure(
        broker,
        msg,
        stage=consumer.stage,
        dataset=dataset_of(event),
        error=outcome,
        max_deliver=consumer.max_deliver,
        source_event_id=event.event_id if event is not None else None,
        spill=spill,
    )


async def deliver_each(
    broker: NatsBroker,
    consumer: Consumer[E],
    handler: EventHandler[E],
    msgs: Sequence[Msg],
    service: str,
    spill: Lake | None = None,
) -> None:
    """Handle and settle messages one by one."""
    for msg in msgs:
        started = time.perf_counter()
        event: E | None = None
        token = _delivery.set((msg,))
        try:
            event = decode(consumer.event, msg.data)
            await handler(event)
        except Exception as exc:
            outcome: Outcome = exc
        else:
            outcome = None
        finally:
            _delivery.reset(token)
        await settle(broker, consumer, msg, event, outcome, service, spill)
        HANDLER_SECONDS.labels(service).observe(time.perf_counter() - started)


async def deliver_batch(
    broker: NatsBroker,
    consumer: Consumer[E],
    handler: BatchHandler[E],
    msgs: Sequence[Msg],
    service: str,
    spill: Lake | None = None,
) -> None:
    """Decode a fetched batch, hand the decodable events to the handler at once, settle each."""
    started = time.perf_counter()
    BATCH_SIZE.labels(service).observe(len(msgs))
    decoded: list[tuple[Msg, E]] = []
    for msg in msgs:
        try:
            decoded.append((msg, decode(consumer.event, msg.data)))
        except PoisonMessageError as poison:
            await settle(broker, consumer, msg, None, poison, service, spill)
    if not decoded:
        return
    token = _delivery.set(tuple(msg for msg, _ in decoded))
    try:
        outcomes = list(await handler([event for _, event in decoded]))
    except Exception as exc:
        outcomes = [exc] * len(decoded)
    finally:
        _delivery.reset(token)
    if len(outcomes) != len(decoded):
        raise RuntimeError(f"{consumer.title}: handler gave {len(outcomes)} outcomes for {len(decoded)} events")
    for (msg, event), outcome in zip(decoded, outcomes, strict=True):
        await settle(broker, consumer, msg, event, outcome, service, spill)
    HANDLER_SECONDS.labels(service).observe(time.perf_counter() - started)
