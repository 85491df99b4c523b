"""Holes in a candle series: intervals with no candle, found from what the exchange returned."""

from __future__ import annotations

from collections.abc import Iterable


def holes(timestamps: Iterable[int], tf_ms: int, since: int | None = None) -> list[tuple[int, int]]:
    """(first missing ts, last missing ts) for every run of missing candles, inclusive.

    `timestamps` are the candles' open times, ascending. With `since`, a late first candle leaves
    [since, first) missing too.
    """
    found: list[tuple[int, int]] = []
    previous = since - tf_ms if since is not None else None
    for ts in timestamps:
        if previous is not None and ts - previous > tf_ms:
            found.append((previous + tf_ms, ts - tf_ms))
        previous = ts
    return found
