"""JetStream streams, KV buckets and publishing conventions, declared once."""

from __future__ import annotations

import logging

from cryptoflow_contracts import STREAM_SUBJECTS, Stream
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError
from nats.js.kv import KeyValue

log = logging.getLogger(__name__)

# Retries of a publish within this window carry the same Nats-Msg-Id and are dropped.
DUPLICATE_WINDOW_S = 15 * 60


def stream_config(stream: Stream) -> StreamConfig:
    return StreamConfig(
        name=stream.value,
        subjects=[STREAM_SUBJECTS[stream]],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        duplicate_window=DUPLICATE_WINDOW_S,
        max_age=7 * 24 * 3600,
    )


async def ensure_streams(js: JetStreamContext) -> None:
    """Create every platform stream if missing; any service may call it at start."""
    for stream in Stream:
        config = stream_config(stream)
        try:
            await js.stream_info(stream.value)
        except NotFoundError:
            try:
                await js.add_stream(config)
                log.info("created stream", extra={"stream": stream.value})
            except BadRequestError:
                # Another service created it between our lookup and add: that is fine.
                await js.stream_info(stream.value)


async def ensure_kv(js: JetStreamContext, bucket: str, history: int = 1) -> KeyValue:
    try:
        return await js.key_value(bucket)
    except (NotFoundError, BadRequestError):
        return await js.create_key_value(KeyValueConfig(bucket=bucket, history=history))


async def connect(url: str, name: str) -> Client:
    import nats

    return await nats.connect(url, name=name, max_reconnect_attempts=-1, reconnect_time_wait=0.5)


def msg_id_headers(event_id: str) -> dict[str, str]:
    return {"Nats-Msg-Id": event_id}
