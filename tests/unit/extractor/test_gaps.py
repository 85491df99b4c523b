"""Holes and coverage: the archive's vectorized hole finder agrees with the candle-by-candle one
the REST job uses; the archive backfill's progress counts every slot it covers."""

from __future__ import annotations

from types import SimpleNamespace

import polars as pl
from cryptoflow_extractor.archive import ArchiveFile
from cryptoflow_extractor.backfill import _archived_slots
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


def test_archive_progress_counts_the_candle_on_the_ranges_end() -> None:
    """A backfill to a candle's open time (`--to`, inclusive: the job's end is one ms past it)
    whose archives reach that far covers every slot of the range; it counted one slot short per
    symbol (`backfill done: 2627995 candle slots covered` of 2,628,000)."""
    day = 86_400_000
    month = ArchiveFile("spot", "monthly", "BTCUSDT", "1m", 0, 31 * day)
    job = SimpleNamespace(start_ms=0, end_ms=31 * day - TF + 1, files_done=[month])
    assert _archived_slots([job], TF) == 31 * 24 * 60  # type: ignore[list-item]
    half = SimpleNamespace(start_ms=10 * day, end_ms=20 * day, files_done=[month])
    assert _archived_slots([job, half], TF) == 31 * 24 * 60 + 10 * 24 * 60  # type: ignore[list-item]
