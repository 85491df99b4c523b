"""A refused overwrite: counted and logged where it is detected, in every lake implementation.

The caller (a service) also turns the raised ObjectConflictError into a DeadLetter, because only
it knows which input the object came from.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter

from .base import ObjectConflictError, sha256_hex

log = logging.getLogger(__name__)

LAKE_CONFLICTS = Counter(
    "cryptoflow_lake_conflicts_total",
    "PUTs refused because the key already held different bytes",
    ["layer"],
)


def refuse_overwrite(url: str, key: str, existing: bytes, new: bytes) -> ObjectConflictError:
    """Count and log a conflict; return the error for the caller to raise."""
    layer = key.split("/", 1)[0] if "/" in key else ""
    error = ObjectConflictError(url, key, existing_sha256=sha256_hex(existing), new_sha256=sha256_hex(new))
    LAKE_CONFLICTS.labels(layer).inc()
    log.error(
        "lake object conflict: refused to overwrite",
        extra={
            "lake_url": url,
            "key": key,
            "existing_sha256": error.existing_sha256,
            "new_sha256": error.new_sha256,
        },
    )
    return error
