"""Failure policy of every consumer: retry what may pass later, dead-letter what never will."""

from __future__ import annotations

import base64
import logging
from datetime import UTC, datetime
from typing import Any

import orjson
import polars as pl
import zstandard
from cryptoflow_contracts import Dataset, DeadLetter, Stage
from faststream.nats import NatsBroker
from nats.aio.msg import Msg

from .jetstream import msg_id_headers
from .lake import KeyOutsideLakeError, Lake, ObjectConflictError, ObjectMissingError
from .metrics import DEAD_LETTERS, MESSAGES_FAILED

log = logging.getLogger(__name__)


class PoisonMessageError(Exception):
    """Input that can never be processed (undecodable, invalid); retrying cannot help.

    `details` go into the DeadLetter as they are (e.g. the keys and checksums of a conflict).
    """

    def __init__(self, reason: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.details = details or {}


# Errors that say the input is wrong, not that a dependency is down (the lake, NATS and PostgreSQL
# raise their own exception types, none of these). KeyOutsideLakeError is a ValueError too.
DATA_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    ArithmeticError,
    pl.exceptions.PolarsError,
)


def permanent(error: BaseException) -> PoisonMessageError | None:
    """The error as a permanent failure, or None when a retry may succeed.

    A lake object that exists with other bytes stays that way (objects are immutable), so a
    conflict is permanent too; its keys and checksums go into the DeadLetter.
    """
    if isinstance(error, PoisonMessageError):
        return error
    if isinstance(error, (KeyOutsideLakeError, ObjectMissingError)):
        # The event names an object that is not there, or a place no object may be: the lake
        # is strongly consistent (S3, MinIO, a directory), so a retry finds the same.
        return PoisonMessageError(f"{type(error).__name__}: {error}")
    if isinstance(error, zstandard.ZstdError):
        return PoisonMessageError(f"not a zstd object: {error}")
    if isinstance(error, DATA_ERRORS):
        # Raised by the handler's own work on the decoded input (a value out of a type's range,
        # a malformed file): the same input raises the same error on every delivery.
        return PoisonMessageError(f"{type(error).__name__}: {error}")
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


# Room left under the server's max_payload for headers and the letter's own fields.
_HEADROOM_BYTES = 8 * 1024
# What a letter too large for NATS keeps of the failed input inline; the rest is in the lake.
EXCERPT_CHARS = 16 * 1024


def max_payload(broker: NatsBroker) -> int:
    """The largest message the connected server takes (1 MiB when not known)."""
    try:
        return int(broker.config.connection_state.connection.max_payload)
    except Exception:
        return 1024 * 1024


async def bounded(letter: DeadLetter, limit: int, spill: Lake | None, raw: bytes | None = None) -> DeadLetter:
    """A letter that fits in `limit` bytes: a bounded excerpt of the payload inline, the full
    input (`raw`, the message as received; else the payload text) written to the lake
    (`details.payload_key`) when there is one.

    It keeps the letter's event_id, so a republish of the same failure is still deduplicated.
    """
    payload = letter.payload or ""
    full = raw if raw is not None else payload.encode()
    details: dict[str, Any] = {"payload_bytes": len(full), "payload_truncated": True}
    if spill is not None and full:
        day = datetime.now(UTC).strftime("%Y-%m-%d")
        key = f"dead-letters/{letter.stage.value}/date={day}/{letter.event_id}.bin"
        await spill.put(key, full)
        details.update({"payload_key": key, "lake_url": spill.url})
    reason = letter.reason if len(letter.reason) <= EXCERPT_CHARS else letter.reason[:EXCERPT_CHARS] + "…"
    kept = {**letter.details, **details}
    if len(orjson.dumps(kept)) > limit // 2:
        kept = details  # the letter's own details are what overflowed: the pointer is what matters
    smaller = letter.model_copy(update={"payload": payload[:EXCERPT_CHARS], "reason": reason, "details": kept})
    return DeadLetter.model_validate({**smaller.model_dump(), "event_id": letter.event_id})


async def publish_dead_letter(
    broker: NatsBroker, letter: DeadLetter, spill: Lake | None = None, raw: bytes | None = None
) -> None:
    """Publish a DeadLetter; one larger than the server takes goes out bounded (see `bounded`)."""
    data = letter.to_json()
    limit = max_payload(broker) - _HEADROOM_BYTES
    if len(data) > limit:
        letter = await bounded(letter, limit, spill, raw)
        data = letter.to_json()
    await broker.publish(
        data,
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
    spill: Lake | None = None,
) -> None:
    """Nak for a later retry, or — poison or out of retries — dead-letter and ack.

    `spill`: where the full input goes when its DeadLetter would be too large for NATS.
    """
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
        await publish_dead_letter(broker, letter, spill, msg.data)
        await msg.ack()
        return
    delay = retry_delay_s(deliveries)
    log.warning(
        "processing failed, will retry",
        extra={"stage": stage.value, "error": repr(error), "deliveries": deliveries, "retry_in_s": delay},
    )
    await msg.nak(delay=delay)
