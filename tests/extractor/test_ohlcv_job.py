"""OhlcvJob pages recorded candles through ccxt: every candle once, real holes as known gaps."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import aiohttp
import polars as pl
from cryptoflow_exchange_sim import CsvCandleMarket, running_simulator
from cryptoflow_extractor.checkpoints import CheckpointStore
from cryptoflow_extractor.ohlcv import OhlcvJob

from .conftest import Recorder, make_session

FIXTURES = Path(__file__).parent.parent / "fixtures" / "candles" / "binance"
FIVE_MIN = 300_000


def recorded(name: str) -> pl.DataFrame:
    schema = {"ts": pl.Int64, **dict.fromkeys(["open", "high", "low", "close", "volume"], pl.Float64)}
    return pl.read_csv(FIXTURES / name, has_header=False, schema=schema)


async def ohlcv_requests(base_url: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(f"{base_url}/_sim/stats") as response:
        stats = await response.json()
    return int(stats["requests"].get("binance.ohlcv", 0))


def expected_holes(ts: list[int], step: int) -> list[tuple[int, int]]:
    return [(a + step, b - step) for a, b in pairwise(ts) if b - a > step]


async def test_pages_every_recorded_candle_once_and_records_each_hole_as_a_known_gap(
    checkpoints: CheckpointStore,
) -> None:
    frame = recorded("ADABTC-5m.csv")
    recorder = Recorder()
    async with running_simulator(CsvCandleMarket(FIXTURES)) as url:
        session = make_session(url, recorder)
        await session.exchange.load_markets()
        job = OhlcvJob(session, "ADA/BTC", "5m", int(frame["ts"][0]), None, 500, checkpoints)
        published = await job.catch_up()
        requests_to_catch_up = await ohlcv_requests(url)
        again = await job.catch_up()
        requests_after_again = await ohlcv_requests(url)
        await session.exchange.close()

    # No endless retries of the holes: catching up again costs one request, which finds nothing new.
    assert requests_after_again - requests_to_catch_up == 1
    assert requests_to_catch_up == -(-frame.height // 500), "one request per page, none for the holes"

    assert published == frame.height
    assert again == 0, "a second catch-up found nothing new: the checkpoint holds"
    assert [tuple(c) for c in recorder.candles()] == frame.rows()
    holes = expected_holes(frame["ts"].to_list(), FIVE_MIN)
    assert holes, "the recording has real holes"
    assert [(g.start_ts, g.end_ts) for g in recorder.gaps] == holes
    assert all(g.missing == (g.end_ts - g.start_ts) // FIVE_MIN + 1 for g in recorder.gaps)
    assert recorder.dead_letters == []


async def test_gap_between_checkpoint_and_the_next_candle_is_rerequested_once_then_recorded(
    checkpoints: CheckpointStore,
) -> None:
    frame = recorded("ADABTC-5m.csv")
    holes = expected_holes(frame["ts"].to_list(), FIVE_MIN)
    longest = max(holes, key=lambda h: h[1] - h[0])
    before_hole = longest[0] - FIVE_MIN
    recorder = Recorder()
    async with running_simulator(CsvCandleMarket(FIXTURES)) as url:
        session = make_session(url, recorder)
        await session.exchange.load_markets()
        first = OhlcvJob(session, "ADA/BTC", "5m", int(frame["ts"][0]), before_hole, 1000, checkpoints)
        await first.catch_up()
        # The checkpoint now points into the hole: the next page starts after it.
        assert await checkpoints.next_since(first.key) == longest[0]
        gaps_before = len(recorder.gaps)
        resumed = OhlcvJob(session, "ADA/BTC", "5m", int(frame["ts"][0]), longest[1] + FIVE_MIN, 1000, checkpoints)
        await resumed.catch_up()
        await session.exchange.close()

    boundary = recorder.gaps[gaps_before]
    assert (boundary.start_ts, boundary.end_ts) == longest
    # Exactly the candles up to the end of the hole's neighbour, each once.
    wanted = frame.filter(pl.col("ts") <= longest[1] + FIVE_MIN)
    assert [tuple(c) for c in recorder.candles()] == wanted.rows()
