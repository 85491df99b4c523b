"""split_rows: silver rows deduplicated by key (the later fetch wins) and sorted by it, whatever the input order."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from cryptoflow_transformer.quality import split_rows

KEY = ["symbol", "trade_id", "n"]
SCHEMA = pl.Schema({"symbol": pl.String(), "trade_id": pl.String(), "n": pl.Int64(), "value": pl.Float64()})
COLUMNS = [pl.col("symbol"), pl.col("trade_id"), pl.col("n"), pl.col("value")]
T0 = datetime(2024, 6, 1, tzinfo=UTC)


def reference(checked: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """split_rows as first written: sort by fetch time, keep each key's last row, sort by key."""
    good = checked.filter(pl.col("reason").is_null()).sort("fetched", nulls_last=False, maintain_order=True)
    good = good.select(COLUMNS)
    deduped = good.unique(subset=KEY, keep="last", maintain_order=True).sort(KEY).cast(SCHEMA)
    rejected = checked.filter(pl.col("reason").is_not_null()).select([*COLUMNS, pl.col("reason")])
    return deduped, rejected, good.height - deduped.height


def rows(seed: int, *, ordered: bool, repeats: bool, rejects: bool) -> pl.DataFrame:
    rng = random.Random(seed)
    keys = sorted(
        {(rng.choice(["BTC/USDT", "ETH/USDT"]), str(rng.randint(8, 12)), rng.randint(0, 2)) for _ in range(12)}
    )
    if repeats:
        keys += rng.sample(keys, 3)
    if not ordered:
        rng.shuffle(keys)
    fetched = [T0 + timedelta(seconds=i if ordered else rng.randint(0, 3)) for i in range(len(keys))]
    return pl.DataFrame(
        {
            "symbol": [k[0] for k in keys],
            "trade_id": [k[1] for k in keys],
            "n": [k[2] for k in keys],
            "value": [float(i) for i in range(len(keys))],
            "fetched": fetched,
            "reason": [("bad" if rejects and rng.random() < 0.3 else None) for _ in keys],
        },
        schema_overrides={"reason": pl.String()},
    )


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("ordered", [True, False])
@pytest.mark.parametrize("repeats", [True, False])
@pytest.mark.parametrize("rejects", [True, False])
def test_split_rows_matches_sort_then_dedupe(seed: int, ordered: bool, repeats: bool, rejects: bool) -> None:
    checked = rows(seed, ordered=ordered, repeats=repeats, rejects=rejects)
    result = split_rows(checked, COLUMNS, KEY, SCHEMA)
    good, rejected, duplicates = reference(checked)
    assert result.good.schema == good.schema and result.good.equals(good)
    assert result.rejected.schema == rejected.schema and result.rejected.equals(rejected, null_equal=True)
    assert result.duplicates == duplicates


def test_split_rows_of_no_rows() -> None:
    checked = rows(0, ordered=True, repeats=False, rejects=False).clear()
    result = split_rows(checked, COLUMNS, KEY, SCHEMA)
    good, rejected, _ = reference(checked)
    assert result.good.schema == good.schema and result.good.height == 0
    assert result.rejected.schema == rejected.schema and result.rejected.height == 0
