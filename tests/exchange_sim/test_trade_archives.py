"""The simulator's `trades` and `aggTrades` archive trees: listed like the klines tree, built from
the trades its REST side serves, aggregated as its `/api/v3/aggTrades` aggregates."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from cryptoflow_exchange_sim import RandomWalkMarket, Trade, TradeWindow
from cryptoflow_exchange_sim.archives import ArchiveFaults, ArchiveTree, agg_trades_csv, trades_csv


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


START = ms("2024-02-29T12:00:00")
NOW = ms("2024-03-02T06:00:00")


def tree(faults: ArchiveFaults | None = None) -> tuple[ArchiveTree, RandomWalkMarket]:
    walk = RandomWalkMarket(["BTC/USDT"], seed=2, start_ms=START)
    return ArchiveTree(walk, lambda: NOW, faults), walk


def test_the_trade_trees_list_ended_periods_without_an_interval_level() -> None:
    archive, _ = tree()
    daily = archive.keys("data/spot/daily/trades/BTCUSDT/")
    assert [key.rsplit("/", 1)[-1] for key in daily] == [
        "BTCUSDT-trades-2024-02-29.zip", "BTCUSDT-trades-2024-02-29.zip.CHECKSUM",
        "BTCUSDT-trades-2024-03-01.zip", "BTCUSDT-trades-2024-03-01.zip.CHECKSUM",
    ]  # fmt: skip
    assert all(key.startswith("data/spot/daily/trades/BTCUSDT/") for key in daily)
    monthly = archive.keys("data/futures/um/monthly/aggTrades/BTCUSDT/")
    assert [key.rsplit("/", 1)[-1] for key in monthly] == [
        "BTCUSDT-aggTrades-2024-02.zip", "BTCUSDT-aggTrades-2024-02.zip.CHECKSUM",
    ]  # fmt: skip


def test_a_trades_file_is_the_days_rest_trades_and_its_checksum_matches() -> None:
    archive, walk = tree()
    name = "BTCUSDT-trades-2024-03-01.zip"
    content = archive.zip_bytes(name)
    assert content is not None
    served = walk.trades(
        "BTCUSDT",
        TradeWindow(start_ms=ms("2024-03-01T00:00:00"), end_ms=ms("2024-03-02T00:00:00") - 1, limit=10**9),
        NOW,
    )
    assert archive.csv_of(name) == trades_csv(served, header=False, microseconds=False)
    assert archive.checksum_text(name, content) == f"{hashlib.sha256(content).hexdigest()}  {name}\n"
    assert archive.zip_bytes(name) == content  # the same bytes every time


def test_faults_apply_to_trade_files_by_name() -> None:
    faults = ArchiveFaults()
    archive, _ = tree(faults)
    name = "BTCUSDT-aggTrades-2024-03-01.zip"
    plain = archive.csv_of(name)
    faults.add("microseconds", name)
    faults.add("header", name)
    varied = archive.csv_of(name)
    assert varied.startswith(b"agg_trade_id,") and varied.count(b"\n") == plain.count(b"\n") + 1
    assert varied.splitlines()[1].split(b",")[5] == plain.splitlines()[0].split(b",")[5] + b"000"
    faults.add("missing", name)
    assert archive.zip_bytes(name) is None and name not in str(archive.keys("data/spot/daily/aggTrades/BTCUSDT/"))


def test_consecutive_trades_of_one_time_price_and_side_are_one_aggregate_named_by_its_first() -> None:
    trades = [
        Trade(10, "100.5", "1.0", "100.5", 1000, True),
        Trade(11, "100.5", "2.5", "251.25", 1000, True),  # same ms, price and side: aggregated
        Trade(12, "100.5", "1.0", "100.5", 1000, False),  # the other side: a new aggregate
        Trade(13, "100.6", "1.0", "100.6", 1000, False),  # another price
        Trade(14, "100.6", "1.0", "100.6", 1001, False),  # another ms
    ]
    rows = [line.split(",") for line in agg_trades_csv(trades, header=False, microseconds=False).decode().split()]
    assert [(r[0], r[2], r[3], r[4], r[6]) for r in rows] == [
        ("10", "3.5", "10", "11", "True"),
        ("12", "1.0", "12", "12", "False"),
        ("13", "1.0", "13", "13", "False"),
        ("14", "1.0", "14", "14", "False"),
    ]
