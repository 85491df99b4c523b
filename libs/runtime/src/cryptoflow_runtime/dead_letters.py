"""Failure policy of every consumer: retry what may pass later, dead-letter what never will."""

from __future__ import annotations

import base64
import logging

from cryptoflow_contracts import Dataset, DeadLetter, Stage, Stream, dlq_subject
from faststream.nats import NatsBroker
from nats.aio.msg import Msg

from .jetstream import msg_id_headers
from .metrics import DEAD_LETTERS, MESSAGES_FAILED

log = logging.getLogger(__name__)


class PoisonMessageError(Exception):
    """Input that can never be processed (undecodable, invalid); retrying cannot help."""


def payload_text(data: bytes) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(data).decode()


async def publish_dead_letter(broker: NatsBroker, letter: DeadLetter) -> None:
    await broker.publish(
        letter.to_json(),
        subject=dlq_subject(letter.stage, letter.dataset),
        headers=msg_id_headers(letter.event_id),
        stream=Stream.DLQ.value,
    )
    DEAD_LETTERS.labels(
        letter.stage.value, letter.dataset.value if letter.dataset else "unknown", letter.error_type
    ).inc()
    log.warning(
        "dead-lettered",
        extra={"stage": letter.stage.value, "reason": letter.reason, "event_id": letter.source_event_id},
    )


def retry_delay_s(deliveries: int) -> float:
    return float(min(2 ** max(deliveries - 1, 0), 30))


async def settle_failure(
    broker: NatsBroker,
    msg: Msg,
    *,
    stage: Stage,
    dataset: Dataset | None,
    error: BaseException,
    max_deliver: int,
    source_event_id: str | None = None,
) -> None:
    """Nak for a later retry, or — poison or out of retries — dead-letter and ack."""
    deliveries = msg.metadata.num_delivered if msg.metadata else 1
    MESSAGES_FAILED.labels(stage.value, dataset.value if dataset else "unknown", type(error).__name__).inc()
    if isinstance(error, PoisonMessageError) or deliveries >= max_deliver:
        letter = DeadLetter(
            stage=stage,
            dataset=dataset,
            reason=str(error) or type(error).__name__,
            error_type=type(error).__name__,
            source_subject=msg.subject,
            source_event_id=source_event_id,
            deliveries=deliveries,
            payload=payload_text(msg.data),
        )
        await publish_dead_letter(broker, letter)
        await msg.ack()
        return
    delay = retry_delay_s(deliveries)
    log.warning(
        "processing failed, will retry",
        extra={"stage": stage.value, "error": repr(error), "deliveries": deliveries, "retry_in_s": delay},
    )
    await msg.nak(delay=delay)
