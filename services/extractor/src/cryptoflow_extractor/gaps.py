"""Holes in a candle series: intervals with no candle, found from what the exchange returned."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def holes(candles: Sequence[Sequence[Any]], tf_ms: int, since: int | None = None) -> list[tuple[int, int]]:
    """(first missing ts, last missing ts) for every run of missing candles, inclusive.

    With `since`, a late first candle leaves [since, first) missing too.
    """
    found: list[tuple[int, int]] = []
    previous = since - tf_ms if since is not None else None
    for candle in candles:
        ts = int(candle[0])
        if previous is not None and ts - previous > tf_ms:
            found.append((previous + tf_ms, ts - tf_ms))
        previous = ts
    return found
