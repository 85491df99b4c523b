"""Holes in a candle series: intervals with no candle, found from what the exchange returned."""

from __future__ import annotations

from collections.abc import Iterable

import polars as pl


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


def holes_in(timestamps: pl.Series, tf_ms: int, since: int | None = None) -> list[tuple[int, int]]:
    """`holes` over a column of open times (ascending), without a Python loop over the candles."""
    if since is not None:
        timestamps = pl.concat([pl.Series([since - tf_ms], dtype=timestamps.dtype), timestamps])
    after = (timestamps.diff() > tf_ms).arg_true()
    return [(int(timestamps[i - 1]) + tf_ms, int(timestamps[i]) - tf_ms) for i in after]
