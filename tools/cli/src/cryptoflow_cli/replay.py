"""`cryptoflow replay` and `cryptoflow rebuild --from-lake`: re-process without touching live consumers.

Replay runs a stage's own handler over its input stream from a time or sequence, through a
consumer of its own (deleted afterwards), so the live durable consumer is left as it was.
Every stage is idempotent (content-derived keys, upserts, the batch ledger): replaying what
was already processed changes nothing, replaying into a wiped warehouse restores it.

Rebuild reads only bronze objects (the streams' retention may have expired): each object is
transformed into silver again and loaded, with the same keys and batch ids as the first time
(rebuild.py: which objects, in which order, derived series, refusals).
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TextIO

import orjson
from cryptoflow_contracts import STREAM_SUBJECTS, Dataset, Stream
from cryptoflow_runtime import OfflineHandler
from cryptoflow_runtime.progress import Progress
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from .stages import replayable, stage

if TYPE_CHECKING:
    from .rebuild import RebuildSummary

PREFIX = "cryptoflow"


@dataclass(frozen=True)
class ReplayFilter:
    """`exchange/symbol/dataset`, any part empty or `*` for all (symbol as BTC/USDT or BTC-USDT)."""

    exchange: str = "*"
    symbol: str = "*"
    dataset: str = "*"

    @classmethod
    def parse(cls, text: str | None) -> ReplayFilter:
        if not text:
            return cls()
        parts = [p.strip() or "*" for p in text.split("/")]
        if len(parts) == 4:  # a symbol written with its slash: binance/BTC/USDT/ohlcv
            parts = [parts[0], f"{parts[1]}-{parts[2]}", parts[3]]
        if len(parts) != 3:
            raise ValueError(f"--filter {text!r}: expected exchange/symbol/dataset (use * for any)")
        exchange, symbol, dataset = parts
        if dataset != "*" and dataset not in {d.value for d in Dataset}:
            raise ValueError(f"--filter: unknown dataset {dataset!r}")
        return cls(exchange, symbol.replace("/", "-"), dataset)

    def subject(self, stream: Stream) -> str:
        """The consumer's filter subject: exact for RAW; LAKE and SILVER are filtered on the
        events themselves (`admits`), since messages from before their subjects carried the
        market (and SILVER's table token is not the dataset) must be found too."""
        if stream is Stream.RAW:
            return f"{PREFIX}.raw.{self.dataset}.{self.exchange}.{self.symbol}"
        return STREAM_SUBJECTS[stream]

    def admits(self, event: dict[str, object]) -> bool:
        """Does an ObjectWritten / BatchReady (as JSON) fall under the filter?"""
        if self.exchange != "*" and event.get("exchange") != self.exchange:
            return False
        if self.dataset != "*" and event.get("dataset") != self.dataset:
            return False
        return self.admits_key(str(event.get("key", "")))

    def admits_key(self, key: str) -> bool:
        """The symbol of a lake object is its key's partition."""
        return self.symbol == "*" or f"/symbol={self.symbol}/" in key


@dataclass(frozen=True)
class Position:
    """Where a replay starts or stops: a UTC time or a stream sequence number."""

    time: datetime | None = None
    seq: int | None = None

    @classmethod
    def parse(cls, text: str) -> Position:
        if text.isdigit():
            return cls(seq=int(text))
        moment = datetime.fromisoformat(text)
        return cls(time=moment if moment.tzinfo else moment.replace(tzinfo=UTC))

    def before_or_at(self, msg: Msg) -> bool:
        """Is `msg` at or before this (end) position?"""
        meta = msg.metadata
        if self.seq is not None:
            return bool(meta.sequence.stream <= self.seq)
        assert self.time is not None
        return bool(meta.timestamp <= self.time)


async def stage_handler(name: str) -> tuple[Stream, OfflineHandler]:
    """The stage's own registered handler, on a connected broker and the stage's stores."""
    spec = stage(name)
    if spec.input is None:
        raise ValueError(f"--stage {name!r}: a source has no input to replay (stages: {', '.join(replayable())})")
    return spec.input, await spec.offline()


def consumer_config(name: str, subject: str, start: Position) -> ConsumerConfig:
    config = ConsumerConfig(
        durable_name=name,
        filter_subject=subject,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=300,
        inactive_threshold=300,  # a crashed replay's consumer goes away by itself
        max_ack_pending=1000,
    )
    if start.seq is not None:
        config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
        config.opt_start_seq = start.seq
    else:
        assert start.time is not None
        config.deliver_policy = DeliverPolicy.BY_START_TIME
        config.opt_start_time = start.time
    return config


def admitted(msg: Msg, where: ReplayFilter) -> bool:
    if where == ReplayFilter() or msg.subject.startswith(f"{PREFIX}.raw."):
        return True
    try:
        event = orjson.loads(msg.data)
    except orjson.JSONDecodeError:
        return True  # the stage's handler dead-letters it, as the live consumer does
    return isinstance(event, dict) and where.admits(event)


async def replay(
    stage: str, start: Position, end: Position | None, where: ReplayFilter, out: TextIO = sys.stderr
) -> int:
    """Re-process the stage's input from `start` (to `end`); returns how many messages were handled."""
    stream, handler = await stage_handler(stage)
    js: JetStreamContext = handler.service.jetstream
    name = f"replay-{stage}-{uuid.uuid4().hex[:8]}"
    subject = where.subject(stream)
    await js.add_consumer(stream.value, consumer_config(name, subject, start))
    handled = 0
    sub = await js.pull_subscribe_bind(durable=name, stream=stream.value)
    try:
        total = (await js.consumer_info(stream.value, name)).num_pending or 0
        progress = Progress(total, out, "messages")
        done = False
        while not done:
            try:
                msgs = await sub.fetch(100, timeout=1.0)
            except NatsTimeout:
                msgs = []
            if not msgs:
                if (await js.consumer_info(stream.value, name)).num_pending == 0:
                    break
                continue
            chosen = []
            for msg in msgs:
                if end is not None and not end.before_or_at(msg):
                    done = True
                    break
                if admitted(msg, where):
                    chosen.append(msg)
                else:
                    await msg.ack()
            if chosen:
                await handler.handle(chosen)
            handled += len(chosen)
            progress.show(handled)
        progress.show(handled, final=True)
    finally:
        # Unsubscribe first: a pull subscription left open makes the broker's drain wait its timeout.
        await sub.unsubscribe()
        await js.delete_consumer(stream.value, name)
        await handler.close()
    return handled


async def rebuild_from_lake(where: ReplayFilter, out: TextIO = sys.stderr) -> RebuildSummary:
    """Bronze → silver → warehouse with no stream at all: `rebuild.rebuild` (its docstring)."""
    from .rebuild import rebuild

    return await rebuild(where, out)


def run_replay(stage: str, start: str, end: str | None, filter_text: str | None) -> int:
    try:
        count = asyncio.run(
            replay(stage, Position.parse(start), Position.parse(end) if end else None, ReplayFilter.parse(filter_text))
        )
    except (LookupError, ValueError) as exc:  # an unknown stage, a source, a bad position or filter
        print(f"cryptoflow replay: error: {exc}", file=sys.stderr)
        return 2
    print(f"replayed {count} message(s) through {stage}")
    return 0


def run_rebuild(
    filter_text: str | None,
    concurrency: int | None = None,
    processes: int | None = None,
    *,
    local_stack: bool = False,
) -> int:
    from .rebuild import DEFAULT_CONCURRENCY, run

    return run(filter_text, concurrency or DEFAULT_CONCURRENCY, processes, local_stack=local_stack)
