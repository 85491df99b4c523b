"""The archive's vectorized hole finder agrees with the candle-by-candle one the REST job uses."""

from __future__ import annotations

import polars as pl
from cryptoflow_extractor.gaps import holes, holes_in
from hypothesis import given
from hypothesis import strategies as st

TF = 60_000


@given(
    steps=st.lists(st.integers(min_value=1, max_value=5), max_size=60),
    first=st.integers(min_value=0, max_value=10),
    since=st.one_of(st.none(), st.integers(min_value=-5, max_value=10)),
)
def test_holes_in_a_column_are_the_holes_of_the_list(steps: list[int], first: int, since: int | None) -> None:
    times = [first * TF]
    for step in steps:
        times.append(times[-1] + step * TF)
    since_ms = since * TF if since is not None else None
    assert holes_in(pl.Series(times, dtype=pl.Int64), TF, since_ms) == holes(times, TF, since_ms)


def test_a_hole_before_the_first_candle_and_inside() -> None:
    times = pl.Series([3 * TF, 4 * TF, 7 * TF], dtype=pl.Int64)
    assert holes_in(times, TF, 0) == [(0, 2 * TF), (5 * TF, 6 * TF)]
    assert holes_in(times, TF) == [(5 * TF, 6 * TF)]
    assert holes_in(pl.Series([], dtype=pl.Int64), TF, 0) == []
