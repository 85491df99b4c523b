"""Both markets apply Binance's startTime/endTime/limit rules identically, and CSV input is checked."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptoflow_exchange_sim import INTERVALS, CsvCandleMarket, KlineWindow, RandomWalkMarket

START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
MINUTE = INTERVALS["1m"]
NOW_MS = START_MS + 100 * 60_000 + 30_000  # 100 closed minutes plus a forming one


def _closed_walk_as_csv(directory: Path) -> CsvCandleMarket:
    walk = RandomWalkMarket(["BTC/USDT"], seed=3, start_ms=START_MS)
    rows = walk.klines("BTCUSDT", MINUTE, KlineWindow(START_MS, None, 1000), NOW_MS)
    (directory / "BTCUSDT-1m.csv").write_text("".join(",".join(map(str, row)) + "\n" for row in rows))
    return CsvCandleMarket(directory)


@pytest.mark.parametrize(
    "window",
    [
        KlineWindow(None, None, 500),
        KlineWindow(None, None, 7),
        KlineWindow(START_MS + 1, None, 5),
        KlineWindow(START_MS - 10**9, None, 3),
        KlineWindow(None, START_MS + 42 * 60_000 + 1, 4),
        KlineWindow(START_MS + 10 * 60_000, START_MS + 20 * 60_000, 1000),
        KlineWindow(START_MS + 10 * 60_000, START_MS + 20 * 60_000, 2),
        KlineWindow(None, START_MS - 1, 10),
        KlineWindow(NOW_MS + 60_000, None, 10),
    ],
)
def test_random_walk_and_csv_select_the_same_candles(tmp_path: Path, window: KlineWindow) -> None:
    walk = RandomWalkMarket(["BTC/USDT"], seed=3, start_ms=START_MS)
    recorded = _closed_walk_as_csv(tmp_path)

    assert walk.klines("BTCUSDT", MINUTE, window, NOW_MS) == recorded.klines("BTCUSDT", MINUTE, window, NOW_MS)


def test_microsecond_timestamps_are_read_as_milliseconds(tmp_path: Path) -> None:
    (tmp_path / "BTCUSDT-1m.csv").write_text(
        "1735689600000000,1.0,2.0,0.5,1.5,10.0,1735689659999999,15.0,3,5.0,7.5,0\n"
    )

    (row,) = CsvCandleMarket(tmp_path).klines("BTCUSDT", MINUTE, KlineWindow(None, None, 10), 0)

    assert (row.open_time, row.close_time) == (1735689600000, 1735689659999)


@pytest.mark.parametrize(
    ("name", "content", "complaint"),
    [
        ("BTCUSDT_1m.csv", "", "expected a name"),
        ("BTCUSDT-7m.csv", "", "expected a name"),
        ("BTCUSDT-1m.csv", "1,2,3\n", "columns"),
        ("BTCUSDT-1m.csv", "open_time,open,high,low,close,volume\n", "expected a number"),
        ("BTCUSDT-1m.csv", "120000,1,1,1,1,1\n60000,1,1,1,1,1\n", "strictly increase"),
        ("BTCXYZ-1m.csv", "60000,1,1,1,1,1\n", "no known quote asset"),
    ],
)
def test_unusable_files_are_refused(tmp_path: Path, name: str, content: str, complaint: str) -> None:
    (tmp_path / name).write_text(content)

    with pytest.raises(ValueError, match=complaint):
        CsvCandleMarket(tmp_path)
