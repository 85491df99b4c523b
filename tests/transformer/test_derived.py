"""Resampling, indicators and anomalies on real Binance candles, through the transformer's own path.

Bronze pages → transform_object → derive (real lake, real JetStream KV for checkpoints). Values must
equal the independent reference (reference.py) to 1e-9, and be bit-for-bit the same whether the
series arrives in one batch, in many small ones, or out of order.
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import polars as pl
import pytest
from cryptoflow_contracts import Anomaly, BatchReady, Dataset, RawSnapshot
from cryptoflow_contracts.silver import INDICATORS, OHLCV
from cryptoflow_runtime.lake import FileLake
from cryptoflow_transformer.batches import transform_object
from cryptoflow_transformer.derived import DerivedConfig, derive
from cryptoflow_transformer.indicators import INDICATOR_COLUMNS
from cryptoflow_transformer.series import AnomalyRules
from cryptoflow_transformer.silver_files import read_silver
from cryptoflow_transformer.state_store import KvStateStore, StateStore

from . import reference
from .bronze import FIXTURES, candle_pages, recorded_candles, snapshot, write_bronze

TARGETS = {"5m": 300_000, "15m": 900_000, "1h": 3_600_000, "4h": 14_400_000, "1d": 86_400_000}
RULES = AnomalyRules(window=30, return_z=3.0, volume_spike=4.0)
CONFIG = DerivedConfig(resample_to=TARGETS, indicators=True, anomalies=True, rules=RULES)


@pytest.fixture
async def new_store(nats_url: str) -> AsyncIterator[object]:
    """A factory of empty checkpoint stores (each its own KV bucket on the real nats-server)."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    buckets: list[str] = []

    async def make() -> StateStore:
        bucket = f"state_{uuid.uuid4().hex[:12]}"
        buckets.append(bucket)
        return KvStateStore(await js.create_key_value(bucket=bucket))

    yield make
    for bucket in buckets:
        await js.delete_key_value(bucket)
    await nc.close()


class Outcome:
    """What the derived step announced, newest announcement of each key winning (as the warehouse upsert does)."""

    def __init__(self) -> None:
        self.indicators: dict[tuple[str, int], dict[str, float | None]] = {}
        self.resampled: dict[tuple[str, int], tuple[float, float, float, float, float, bool]] = {}
        self.anomalies: dict[int, set[tuple[str, float]]] = {}

    async def record(self, lake: FileLake, batches: list[BatchReady], anomalies: list[Anomaly]) -> None:
        for batch in batches:
            if batch.table == "indicators":
                rows = read_silver(await lake.get(batch.key), INDICATORS)
                for row in rows.iter_rows(named=True):
                    key = (row["timeframe"], int(row["ts"].timestamp() * 1000))
                    self.indicators[key] = {c: row[c] for c in INDICATOR_COLUMNS}
                    # These candles were evaluated again: their earlier verdicts are superseded.
                    self.anomalies.pop(key[1], None)
            else:
                rows = read_silver(await lake.get(batch.key), OHLCV)
                assert rows["resampled"].all()
                for row in rows.iter_rows(named=True):
                    key = (row["timeframe"], int(row["ts"].timestamp() * 1000))
                    self.resampled[key] = (
                        row["open"],
                        row["high"],
                        row["low"],
                        row["close"],
                        row["volume"],
                        row["final"],
                    )
        for a in anomalies:
            self.anomalies.setdefault(a.ts, set()).add((a.kind, a.value))

    @property
    def flagged(self) -> list[tuple[int, str, float]]:
        return sorted((ts, kind, value) for ts, found in self.anomalies.items() for kind, value in found)


async def run(lake: FileLake, store: StateStore, frame: pl.DataFrame, symbol: str, tf: str, sizes: list[int],
              order: list[int] | None = None) -> Outcome:  # fmt: skip
    """Feed the candles as pages of `sizes`, one bronze object per page, in `order` (default: as recorded)."""
    pages = candle_pages(frame, symbol, tf, sizes)
    outcome = Outcome()
    for index in order if order is not None else range(len(pages)):
        for written in await write_bronze(lake, [pages[index]]):
            result = await transform_object(lake, written)
            assert result.silver is not None
            derived = await derive(lake, store, CONFIG, result.silver, written)
            await outcome.record(lake, derived.batches, derived.anomalies)
    return outcome


def close_to(mine: float | None, ref: float | None, scale: float) -> bool:
    """Equal to 1e-9 relative; differences of EMAs (MACD) are compared relative to the price level."""
    if mine is None or ref is None:
        return mine is ref
    return math.isclose(mine, ref, rel_tol=1e-9, abs_tol=1e-9 * scale)


@pytest.mark.parametrize(
    ("name", "symbol", "tf"), [("ETHBTC-5m.csv", "ETH/BTC", "5m"), ("XRPETH-1m.csv", "XRP/ETH", "1m")]
)
async def test_indicators_equal_the_reference(tmp_path: Path, new_store, name: str, symbol: str, tf: str) -> None:  # type: ignore[no-untyped-def]
    frame = recorded_candles(name)
    outcome = await run(FileLake(f"file://{tmp_path}/lake"), await new_store(), frame, symbol, tf, [1000])
    candles = list(frame.rows())
    expected = reference.indicators(candles)
    scale = float(frame["close"].median())  # type: ignore[arg-type]
    assert len(outcome.indicators) == len(candles)
    checked = 0
    for candle, ref_row in zip(candles, expected, strict=True):
        mine = outcome.indicators[(tf, candle[0])]
        for column in INDICATOR_COLUMNS:
            assert close_to(mine[column], ref_row[column], scale), (candle[0], column, mine[column], ref_row[column])
            checked += mine[column] is not None
    # Null exactly until each window is full: RSI from the 15th candle, signal from the 34th, BB from the 20th.
    first = [outcome.indicators[(tf, c[0])] for c in candles[:40]]
    assert [r["rsi_14"] is None for r in first].index(False) == 14
    assert [r["bb_mid"] is None for r in first].index(False) == 19
    assert [r["macd"] is None for r in first].index(False) == 25
    assert [r["macd_signal"] is None for r in first].index(False) == 33
    assert checked > 7 * (len(candles) - 40)


async def test_one_batch_many_batches_and_late_batches_give_identical_values(tmp_path: Path, new_store) -> None:  # type: ignore[no-untyped-def]
    frame = recorded_candles("XRPETH-1m.csv")
    whole = await run(FileLake(f"file://{tmp_path}/one"), await new_store(), frame, "XRP/ETH", "1m", [5000])
    sizes = [1, 3, 7, 120, 2, 250, 13, 1, 300]
    pieces = await run(FileLake(f"file://{tmp_path}/many"), await new_store(), frame, "XRP/ETH", "1m", sizes)
    pages = len(candle_pages(frame, "XRP/ETH", "1m", sizes))
    order = list(range(pages))
    random.Random(7).shuffle(order)  # late and early pages: recomputed from older checkpoints
    shuffled = await run(FileLake(f"file://{tmp_path}/late"), await new_store(), frame, "XRP/ETH", "1m", sizes, order)
    for outcome in (pieces, shuffled):
        assert outcome.indicators == whole.indicators  # bit for bit, nulls included
        assert outcome.resampled == whole.resampled
        assert outcome.flagged == whole.flagged
    assert len(whole.indicators) == frame.height
    assert whole.flagged, "the recording has anomalies at these thresholds"


async def test_resampling_equals_the_reference_and_binances_own_5m_candles(tmp_path: Path, new_store) -> None:  # type: ignore[no-untyped-def]
    frame = recorded_candles("XRPETH-1m.csv")
    outcome = await run(FileLake(f"file://{tmp_path}/lake"), await new_store(), frame, "XRP/ETH", "1m", [400])
    candles = list(frame.rows())
    for timeframe, step in TARGETS.items():
        expected = {row[0]: row[1:] for row in reference.resample(candles, step)}
        mine = {ts: values for (tf, ts), values in outcome.resampled.items() if tf == timeframe}
        assert mine == expected, timeframe  # exact: first/max/min/last, and Σ volume oldest first
        newest_close = candles[-1][0] + 60_000
        assert [ts for ts, v in mine.items() if not v[-1]] == [ts for ts in mine if ts + step > newest_close]
    # Binance's own 5m candles of the same minutes: the same OHLC, volume to 1e-9.
    schema = {"ts": pl.Int64, **dict.fromkeys(["open", "high", "low", "close", "volume"], pl.Float64)}
    native = pl.read_csv(FIXTURES / "candles/binance-native-5m/XRPETH-5m.csv", has_header=False, schema=schema)
    for ts, *ohlcv in native.rows():
        o, h, low, c, v, _final = outcome.resampled[("5m", ts)]
        assert (o, h, low, c) == tuple(ohlcv[:4])
        assert math.isclose(v, ohlcv[4], rel_tol=1e-9)
    assert len([k for k in outcome.resampled if k[0] == "5m"]) == native.height


async def test_anomalies_equal_the_reference(tmp_path: Path, new_store) -> None:  # type: ignore[no-untyped-def]
    frame = recorded_candles("ETHBTC-5m.csv")
    outcome = await run(FileLake(f"file://{tmp_path}/lake"), await new_store(), frame, "ETH/BTC", "5m", [500])
    expected = reference.anomalies(list(frame.rows()), RULES.window, RULES.return_z, RULES.volume_spike)
    assert len(outcome.flagged) == len(expected) > 0
    for (ts, kind, value), (ref_ts, ref_kind, ref_value) in zip(outcome.flagged, expected, strict=True):
        assert (ts, kind) == (ref_ts, ref_kind)
        assert math.isclose(value, ref_value, rel_tol=1e-9)
    assert not outcome.resampled  # resampling is from 1m only


def forming(candle: tuple[Any, ...], symbol: str) -> RawSnapshot:
    """A stream page of the candle while it formed (`final: false`): far from how it closed."""
    ts, o, h, low, _c, v = candle
    page = snapshot(Dataset.OHLCV, [[ts, o, h, low, h, v * 100 + 1]], symbol=symbol, timeframe="1m", first_ts=ts)
    return RawSnapshot.model_validate({**page.model_dump(), "final": False, "event_id": ""})


@pytest.mark.parametrize("shuffled", [False, True], ids=["in-order", "shuffled"])
async def test_forming_candles_are_not_history(tmp_path: Path, new_store, shuffled: bool) -> None:  # type: ignore[no-untyped-def]
    """A forming 1m candle is silver (final false) but no series step takes it: with every page
    preceded by its first candle still forming, and the candle after the last one forming at the
    end, indicators, resampled candles and anomalies are those of the closed candles alone. Also
    when pages come late, out of order (a step then re-reads the series' silver candles, forming
    copies included), forming pages after the closed ones."""
    recorded = recorded_candles("XRPETH-1m.csv")
    frame = recorded.head(150)
    closed_only = await run(FileLake(f"file://{tmp_path}/closed"), await new_store(), frame, "XRP/ETH", "1m", [10])
    lake, store, outcome = FileLake(f"file://{tmp_path}/forming"), await new_store(), Outcome()
    pages: list[RawSnapshot] = []
    for page in candle_pages(frame, "XRP/ETH", "1m", [10]):
        pages += [forming(tuple(page.payload[0]), "XRP/ETH"), page]
    pages.append(forming(recorded.row(150), "XRP/ETH"))
    if shuffled:
        random.Random(11).shuffle(pages)
    for page in pages:
        for written in await write_bronze(lake, [page]):
            result = await transform_object(lake, written)
            assert result.silver is not None and result.silver["final"].to_list() == [page.final] * len(page.payload)
            derived = await derive(lake, store, CONFIG, result.silver, written)
            await outcome.record(lake, derived.batches, derived.anomalies)
    assert len(outcome.indicators) == frame.height
    assert outcome.indicators == closed_only.indicators
    assert outcome.resampled == closed_only.resampled
    assert outcome.flagged == closed_only.flagged
