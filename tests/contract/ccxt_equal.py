"""ccxt's own rule for "this parse equals the recorded one", as its static-response tests apply it
in Python (non-strict types): a number may be recorded as a string, empty values are equal, keys
listed in the file's `skipKeys` must be present but may differ; everything else, `info` included,
must match."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import orjson
from ccxt import Exchange


def _empty(value: Any) -> bool:
    if value is None or value is False or value == "":
        return True
    if isinstance(value, dict | list | str | bool):
        return False
    return bool(value == 0)


def ccxt_mismatch(exchange: Exchange, new: Any, stored: Any, skip: Collection[str] = (), path: str = "$") -> str | None:
    """Where `new` (our replay's result) differs from `stored` (ccxt's recorded parse), or None."""
    if (new is None and stored is None) or (_empty(new) and _empty(stored)):
        return None
    if isinstance(new, str) and isinstance(stored, str) and new.startswith("{") and stored.startswith("{"):
        new, stored = orjson.loads(new), orjson.loads(stored)
    if isinstance(stored, dict) and isinstance(new, dict):
        if len(stored) != len(new):
            return f"{path}: keys {sorted(new)} != recorded {sorted(stored)}"
        for key in stored:
            if key not in new:
                return f"{path}: no key {key!r}"
            if key not in skip and (found := ccxt_mismatch(exchange, new[key], stored[key], skip, f"{path}.{key}")):
                return found
        return None
    if isinstance(stored, list) and isinstance(new, list):
        if len(stored) != len(new):
            return f"{path}: {len(new)} items != recorded {len(stored)}"
        for i, (a, b) in enumerate(zip(new, stored, strict=True)):
            if found := ccxt_mismatch(exchange, a, b, skip, f"{path}[{i}]"):
                return found
        return None
    new_kind, stored_kind = _kind(new), _kind(stored)
    if new_kind != stored_kind:
        # A number recorded as a string, or the reverse: compared as numbers.
        if {new_kind, stored_kind} == {"str", "number"} and _numeric_pair(new, stored):
            equal = exchange.parse_to_numeric(new) == exchange.parse_to_numeric(stored)
            return None if equal else _differs(path, new, stored)
        return _differs(path, new, stored)
    if new_kind != "number":
        return None if str(new) == str(stored) else _differs(path, new, stored)
    equal = exchange.parse_to_numeric(str(new)) == exchange.parse_to_numeric(str(stored))
    return None if equal else _differs(path, new, stored)


def _kind(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "bool"
    return "str" if isinstance(value, str) else "number"


def _numeric_pair(a: Any, b: Any) -> bool:
    """A number recorded as a string (or the reverse), neither a bool nor None."""
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return False
    try:
        float(a), float(b)
    except (TypeError, ValueError):
        return False
    return True


def _differs(path: str, new: Any, stored: Any) -> str:
    return f"{path}: {new!r} != recorded {stored!r}"
