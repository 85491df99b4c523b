"""Failure policy of every consumer: retry what may pass later, dead-letter what never will."""

from __future__ import annotations

import base64
import logging
from typing import Any

from cryptoflow_contracts import Dataset, DeadLetter, Stage
from faststream.nats import NatsBroker
from nats.aio.msg import Msg

from .jetstream import msg_id_headers
from .lake import ObjectConflictError
from .metrics import DEAD_LETTERS, MESSAGES_FAILED

log = logging.getLogger(__name__)


class PoisonMessageError(Exception):
    """Input that can never be processed (undecodable, invalid); retrying cannot help.

    `details` go into the DeadLetter as they are (e.g. the keys and checksums of a conflict).
    """

    def __init__(self, reason: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.details = details or {}


def permanent(error: BaseException) -> PoisonMessageError | None:
    """The error as a permanent failure, or None when a retry may succeed.

    A lake object that exists with other bytes stays that way (objects are immutable), so a
    conflict is permanent too; its keys and checksums go into the DeadLetter.
    """
    if isinstance(error, PoisonMessageError):
        return error
    if isinstance(error, ObjectConflictError):
        return PoisonMessageError(
            f"lake object conflict: {error.key} exists with different bytes",
            details={
                "key": error.key,
                "lake_url": error.url,
                "existing_sha256": error.existing_sha256,
                "new_sha256": error.new_sha256,
            },
        )
    return None


def payload_text(data: bytes) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(data).decode()


async def publish_dead_letter(broker: NatsBroker, letter: DeadLetter) -> None:
    await broker.publish(
        letter.to_json(),
        subject=letter.subject(),
        headers=msg_id_headers(letter.event_id),
        stream=letter.STREAM.value,
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
    poison = permanent(error)
    if poison is not None or deliveries >= max_deliver:
        letter = DeadLetter(
            stage=stage,
            dataset=dataset,
            reason=str(poison or error) or type(error).__name__,
            error_type=type(error).__name__,
            source_subject=msg.subject,
            source_event_id=source_event_id,
            deliveries=deliveries,
            payload=payload_text(msg.data),
            details=poison.details if poison is not None else {},
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
