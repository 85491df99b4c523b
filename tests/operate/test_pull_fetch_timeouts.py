"""A fetch that times out with a bare asyncio.TimeoutError no longer drops a FastStream batch (decision 0031)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import cryptoflow_runtime  # noqa: F401  (installs the fetch shim, as in every service)
import nats
import nats.errors
import pytest
from faststream import Context
from faststream.middlewares import AckPolicy
from faststream.nats import ConsumerConfig, JStream, NatsBroker, PullSub
from faststream.nats.message import NatsBatchMessage
from nats.js import JetStreamContext
from nats.js.api import AckPolicy as JsAckPolicy


def bare_timeout_after_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    """nats-py raises a bare asyncio.TimeoutError when its deadline runs out between two pull
    requests; make that happen on the fetch right after one that returned messages."""
    original = JetStreamContext.PullSubscription._fetch_n
    returned = False

    async def fetch_n(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal returned
        if returned:
            returned = False
            raise asyncio.TimeoutError  # noqa: UP041  (exactly what nats-py raises)
        msgs = await original(self, *args, **kwargs)
        returned = bool(msgs)
        return msgs

    monkeypatch.setattr(JetStreamContext.PullSubscription, "_fetch_n", fetch_n)


async def test_fetch_times_out_with_the_nats_error(fresh_nats_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    nc = await nats.connect(fresh_nats_url)
    try:
        js = nc.jetstream()
        await js.add_stream(name="T", subjects=["t.>"])
        await js.publish("t.1", b"x")
        sub = await js.pull_subscribe("t.>", durable="probe", stream="T")
        bare_timeout_after_messages(monkeypatch)
        assert len(await sub.fetch(5, timeout=1)) == 1
        with pytest.raises(nats.errors.TimeoutError):
            await sub.fetch(5, timeout=1)
    finally:
        await nc.close()


async def test_a_faststream_batch_is_handled_at_once_not_after_ack_wait(
    fresh_nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bare_timeout_after_messages(monkeypatch)
    broker = NatsBroker(fresh_nats_url)
    received: asyncio.Queue[list[bytes]] = asyncio.Queue()

    @broker.subscriber(
        "t.>",
        stream=JStream(name="T", subjects=["t.>"]),
        durable="batcher",
        pull_sub=PullSub(batch_size=10, timeout=0.5, batch=True),
        ack_policy=AckPolicy.MANUAL,
        config=ConsumerConfig(durable_name="batcher", ack_policy=JsAckPolicy.EXPLICIT, ack_wait=60),
    )
    async def on_batch(body: Any, message: Annotated[NatsBatchMessage, Context("message")]) -> None:
        for msg in message.raw_message:
            await msg.ack()
        await received.put([m.data for m in message.raw_message])

    async with broker:
        await broker.start()
        await broker.publish(b"one", "t.1", stream="T")
        # Without the shim the batch's consume task dies on the bare timeout and the message is
        # redelivered only after ack_wait (60 s).
        assert await asyncio.wait_for(received.get(), timeout=10) == [b"one"]
