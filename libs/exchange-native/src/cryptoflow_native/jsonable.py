"""Values as JSON every reader holds, whatever an exchange put in them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def json_safe(value: Any) -> Any:
    """`value` as JSON every reader holds: ccxt's markets carry what the exchange sent in `info`,
    integers beyond 64 bits included (Bitget), which become strings; anything not JSON, its text."""
    if value is None or isinstance(value, bool | str | float):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else str(value)
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return str(value)
