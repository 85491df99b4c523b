"""Schema drift: the shape of an exchange's raw payload against a learned baseline.

The shape of a JSON value is a flat map from a field path to its JSON type: object keys by
name, rows of a list collapsed into `[]` (so a list of 1000 klines has the shape of one row),
and positions inside a fixed-width row (Binance klines are 12-element arrays) as `[0]`..`[11]`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Shape = dict[str, str]

# The rows of an empty list: their shape is unknown, so nothing under it can drift.
UNKNOWN = "unknown"

_JSON_TYPES = ((bool, "bool"), (int, "number"), (float, "number"), (str, "string"), (type(None), "null"))


def json_type(value: Any) -> str:
    for python_type, name in _JSON_TYPES:
        if isinstance(value, python_type):
            return name
    return "object" if isinstance(value, dict) else "array" if isinstance(value, list) else type(value).__name__


def shape_of(value: Any, path: str = "$") -> Shape:
    shape: Shape = {path: json_type(value)}
    if isinstance(value, dict):
        for key, item in value.items():
            shape.update(shape_of(item, f"{path}.{key}"))
    elif isinstance(value, list) and not value:
        shape[f"{path}[]"] = UNKNOWN
    elif isinstance(value, list):
        first = value[0]
        if isinstance(first, list):
            # Rows of positional fields: each position is a field of its own.
            for row in value[:50]:
                for index, item in enumerate(row):
                    shape.update(shape_of(item, f"{path}[][{index}]"))
        else:
            for row in value[:50]:
                shape.update(shape_of(row, f"{path}[]"))
    return shape


@dataclass(frozen=True)
class Drift:
    appeared: dict[str, str]
    vanished: dict[str, str]
    changed: dict[str, tuple[str, str]]

    @property
    def breaking(self) -> bool:
        """A vanished or retyped field can shift or break parsing; an added one cannot."""
        return bool(self.vanished or self.changed)

    def __bool__(self) -> bool:
        return bool(self.appeared or self.vanished or self.changed)

    def describe(self) -> str:
        parts = []
        if self.appeared:
            parts.append("appeared: " + ", ".join(sorted(self.appeared)))
        if self.vanished:
            parts.append("vanished: " + ", ".join(sorted(self.vanished)))
        if self.changed:
            parts.append("changed type: " + ", ".join(f"{k} {a}→{b}" for k, (a, b) in sorted(self.changed.items())))
        return "; ".join(parts)


def compare(baseline: Shape, current: Shape) -> Drift:
    unknown = [path for path, kind in current.items() if kind == UNKNOWN]

    def known(path: str) -> bool:
        return not any(path.startswith(prefix) for prefix in unknown)

    current = {p: k for p, k in current.items() if k != UNKNOWN}
    baseline = {p: k for p, k in baseline.items() if k != UNKNOWN}
    # null is compatible with any type: optional fields come and go as null.
    changed = {
        path: (baseline[path], kind)
        for path, kind in current.items()
        if path in baseline and kind != baseline[path] and "null" not in (kind, baseline[path])
    }
    return Drift(
        appeared={p: k for p, k in current.items() if p not in baseline},
        vanished={p: k for p, k in baseline.items() if p not in current and known(p)},
        changed=changed,
    )


class DriftDetector:
    """Learns each exchange·dataset's shape from its first good response, then compares."""

    def __init__(self) -> None:
        self.baselines: dict[tuple[str, str], Shape] = {}
        self._reported_appeared: dict[tuple[str, str], set[str]] = {}

    def check(self, exchange: str, dataset: str, payload: Any) -> Drift:
        current = shape_of(payload)
        key = (exchange, dataset)
        baseline = self.baselines.get(key)
        if baseline is None:
            # An empty answer shows no row shape: learn from the first one that has rows.
            if UNKNOWN not in current.values():
                self.baselines[key] = current
            return Drift({}, {}, {})
        drift = compare(baseline, current)
        # An added field is reported once, not on every poll. It does not join the baseline:
        # the baseline is what parsing relies on, and an extra field going away again is no drift.
        reported = self._reported_appeared.setdefault(key, set())
        fresh = {path: kind for path, kind in drift.appeared.items() if path not in reported}
        reported.update(fresh)
        return Drift(appeared=fresh, vanished=drift.vanished, changed=drift.changed)
