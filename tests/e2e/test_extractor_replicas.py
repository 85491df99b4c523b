"""Three extractor replicas share 30 jobs through leases (issue 11, decision 0042): kill -9 one
mid-run, then another; the warehouse still equals what the simulator served, the dead replicas'
jobs are re-owned within the lease time, and no job was ever polled by two replicas at once."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import nats
from cryptoflow_exchange_sim import INTERVALS, KlineWindow, RandomWalkMarket
from cryptoflow_extractor.leases import read_owners

from .harness import Pipeline, Proc

T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
MINUTE = 60_000
N = 900  # 1m candles per series: 90 pages of 10, so the run outlasts two kills
SEED = 5
EXCHANGES = ("binance", "bybit", "gate")
SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT", "ADA/USDT")
TIMEFRAMES = ("1m", "5m")
JOBS = len(EXCHANGES) * len(SYMBOLS) * len(TIMEFRAMES)
# A request starts only while its lease has the request timeout (2 s here) and 1 s more left: 3 s
# separate the last request a lost owner may start from the next owner's first, and a handed-over
# job's next owner looks for it a lease round (TTL / 5) later. Room for replicas and a simulator
# starved of CPU by a busy test machine (with a 4 s lease and a 1 s timeout, full suite runs saw one
# overlapping request in two).
LEASE_TTL_S = 6.0
BUCKET = "cryptoflow_extractor_leases"

BLOCK = """  {exchange}:
    url: {url}
    rate_limit_ms: 15
    symbols: [{symbols}]
    datasets:
      ohlcv: {{timeframes: [{timeframes}], since: 2024-01-01T00:00:00Z, page_limit: 10, poll_interval_s: 1}}
"""


def write_jobs(path: Path, sim_url: str) -> None:
    blocks = "".join(
        BLOCK.format(exchange=exchange, url=sim_url, symbols=", ".join(SYMBOLS), timeframes=", ".join(TIMEFRAMES))
        for exchange in EXCHANGES
    )
    path.write_text(f"exchanges:\n{blocks}")


async def owners(pipe: Pipeline) -> dict[str, str]:
    nc = await nats.connect(pipe.nats_url)
    try:
        js = nc.jetstream()
        return await read_owners(js, await js.key_value(BUCKET), BUCKET)
    except Exception:
        return {}
    finally:
        await nc.close()


async def reowned_after_kill(pipe: Pipeline, victim: Proc, survivors: set[str]) -> float:
    """Kill -9 `victim`; seconds until every job is leased by a survivor."""
    victim.kill9()
    killed = time.monotonic()

    async def all_owned_by_survivors() -> bool:
        held = await owners(pipe)
        return len(held) == JOBS and set(held.values()) <= survivors

    await pipe.wait_for(
        "the dead replica's jobs re-owned", all_owned_by_survivors, timeout=LEASE_TTL_S * 6, interval=0.1
    )
    return time.monotonic() - killed


async def test_three_replicas_share_the_jobs_and_two_kills_lose_nothing_double_nothing(
    file_pipeline: Pipeline,
) -> None:
    pipe = file_pipeline
    end = T0 + N * MINUTE
    pipe.start_simulator(
        [
            "--exchange", "all", "--symbols", ",".join(SYMBOLS), "--seed", str(SEED),
            "--start", str(T0), "--end", str(end),
            # Every candle request takes 40 ms: two replicas polling one job would overlap there.
            "--fault", "delay:ohlcv:seconds=0.04,count=always",
        ]
    )  # fmt: skip
    assert pipe.sim_url
    jobs = pipe.workdir / "jobs.yaml"
    write_jobs(jobs, pipe.sim_url)
    pipe.extra_env.update(
        {"EXTRACTOR_CONFIG": str(jobs), "EXTRACTOR_LEASE_TTL_S": str(LEASE_TTL_S), "EXTRACTOR_TIMEOUT_MS": "2000"}
    )
    for name in ("warehouse-loader", "transformer", "lake-writer"):
        pipe.start(name)
    replicas = {
        f"extractor-{i}": pipe.start("extractor", env={"EXTRACTOR_REPLICA_ID": f"extractor-{i}"}) for i in range(3)
    }

    async def shared_by_three() -> bool:
        held = await owners(pipe)
        return len(held) == JOBS and sorted(Counter(held.values()).values()) == [10, 10, 10]

    await pipe.wait_for("30 jobs leased, 10 per replica", shared_by_three, timeout=60)

    async def some_candles() -> bool:
        return await pipe.ohlcv_count() > 0

    await pipe.wait_for("the first candles", some_candles, timeout=60)
    first_move = await reowned_after_kill(pipe, replicas["extractor-2"], {"extractor-0", "extractor-1"})
    second_move = await reowned_after_kill(pipe, replicas["extractor-1"], {"extractor-0"})
    # A lease expires a TTL after its owner's last renewal; the survivors look every TTL/5.
    bound = LEASE_TTL_S + LEASE_TTL_S / 5 + 1.5
    assert first_move < bound and second_move < bound, (first_move, second_move)

    market = RandomWalkMarket(list(SYMBOLS), SEED, T0, end)
    now = int(time.time() * 1000)
    expected: dict[tuple[str, str], list[tuple[float, ...]]] = {}
    for symbol in SYMBOLS:
        for timeframe in TIMEFRAMES:
            served = market.klines(symbol.replace("/", ""), INTERVALS[timeframe], KlineWindow(T0, end, 10**6), now)
            expected[(symbol, timeframe)] = [
                (k.open_time, *(float(v) for v in (k.open, k.high, k.low, k.close, k.volume))) for k in served
            ]
    total = len(EXCHANGES) * sum(len(rows) for rows in expected.values())

    async def complete() -> bool:
        return await pipe.ohlcv_count() >= total

    await pipe.wait_for("every candle of every job", complete, timeout=240)
    for exchange in EXCHANGES:
        for (symbol, timeframe), rows in expected.items():
            got = await pipe.fetch(
                "SELECT (extract(epoch FROM ts) * 1000)::bigint, open, high, low, close, volume FROM ohlcv "
                "WHERE exchange = $1 AND symbol = $2 AND timeframe = $3 ORDER BY ts",
                exchange,
                symbol,
                timeframe,
            )
            assert [tuple(r.values()) for r in got] == rows, (exchange, symbol, timeframe)
    assert await pipe.ohlcv_count() == total

    stats = await pipe.simulator_stats()
    ohlcv_jobs = {job: most for job, most in stats["most_concurrent"].items() if ".ohlcv " in job}
    assert len(ohlcv_jobs) == JOBS, sorted(ohlcv_jobs)
    assert set(ohlcv_jobs.values()) == {1}, {job: most for job, most in ohlcv_jobs.items() if most > 1}
    log = replicas["extractor-0"].log()
    assert '"jobs taken"' in log and "extractor-0" in log
