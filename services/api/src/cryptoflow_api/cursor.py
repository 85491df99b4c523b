"""Keyset cursors: the key of the last row a page returned, opaque to clients (decision 0047).

A cursor is URL-safe base64 of JSON `{"r": resource, "k": [key values]}`, times as epoch
microseconds. The next page is the rows whose key is greater, so a page costs one index range
scan wherever it starts (no OFFSET), and rows inserted meanwhile never make one appear twice.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from .problems import ProblemError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

KeyValue = int | str | datetime


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"t": (value - EPOCH) // timedelta(microseconds=1)}
    return value


def _typed(value: Any) -> KeyValue:
    if isinstance(value, dict) and isinstance(value.get("t"), int):
        return EPOCH + timedelta(microseconds=value["t"])
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("unexpected key value")
    return value


def encode_cursor(resource: str, key: tuple[Any, ...]) -> str:
    raw = orjson.dumps({"r": resource, "k": [_plain(value) for value in key]})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(resource: str, cursor: str, key_length: int) -> tuple[KeyValue, ...]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        decoded = orjson.loads(raw)
        if decoded.get("r") != resource or len(decoded["k"]) != key_length:
            raise ValueError("cursor of another resource")
        return tuple(_typed(value) for value in decoded["k"])
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error, orjson.JSONDecodeError):
        raise ProblemError(
            400, f"cursor is not a cursor of /v1/{resource}: pass next_cursor as given", kind="invalid-cursor"
        ) from None
