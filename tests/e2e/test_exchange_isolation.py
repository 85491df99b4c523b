"""One exchange failing never holds up another; when it recovers it resumes from its checkpoint."""

from __future__ import annotations

import aiohttp

from .harness import Pipeline
from .test_end_to_end import MINUTE, T0, N

JOBS = """
exchanges:
  binance: &job
    url: {url}
    rate_limit_ms: 5
    symbols: [BTC/USDT]
    datasets:
      ohlcv: {{timeframes: [1m], since: 2024-01-01T00:00:00Z, page_limit: 20, poll_interval_s: 0.5}}
  gate:
    <<: *job
"""


async def extractor_metric(pipe: Pipeline, port: int, series: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    return next((float(line.split()[-1]) for line in text.splitlines() if line.startswith(series + " ")), 0.0)


async def rows_of(pipe: Pipeline, exchange: str) -> int:
    return int(await pipe.fetchval("SELECT count(*) FROM ohlcv WHERE exchange = $1", exchange, default=0) or 0)


async def test_a_failing_exchange_does_not_hold_up_another_and_resumes_when_it_recovers(
    file_pipeline: Pipeline,
) -> None:
    pipe = file_pipeline
    pipe.start_simulator(
        ["--exchange", "binance,gate", "--symbols", "BTC/USDT", "--start", str(T0), "--end", str(T0 + N * MINUTE)]
    )
    assert pipe.sim_url
    async with aiohttp.ClientSession() as session:
        fault = {"kind": "server_error", "endpoint": "gate.ohlcv", "count": "always"}
        async with session.post(f"{pipe.sim_url}/_sim/faults", json=fault) as response:
            assert response.status < 300, await response.text()
    jobs = pipe.workdir / "jobs.yaml"
    jobs.write_text(JOBS.format(url=pipe.sim_url))
    pipe.extra_env.update(
        {
            "EXTRACTOR_CONFIG": str(jobs),
            "EXTRACTOR_BREAKER_THRESHOLD": "3",
            "EXTRACTOR_BREAKER_COOLDOWN_S": "2",
            "EXTRACTOR_MAX_POLL_BACKOFF_S": "2",
        }
    )
    procs = pipe.start_all()

    async def binance_complete() -> bool:
        return await rows_of(pipe, "binance") == N

    await pipe.wait_for("binance, while gate keeps failing", binance_complete)
    assert await rows_of(pipe, "gate") == 0
    port = procs["extractor"].http_port
    failures = await extractor_metric(
        pipe,
        port,
        'cryptoflow_extractor_requests_total{dataset="ohlcv",exchange="gate",outcome="ExchangeNotAvailable"}',
    )
    assert failures >= 1, "gate was asked, and failed"

    async def circuit_opened() -> bool:
        return await extractor_metric(pipe, port, 'cryptoflow_extractor_circuit_open{exchange="gate"}') == 1.0

    await pipe.wait_for("gate's circuit to open", circuit_opened, timeout=30, interval=0.1)

    async with aiohttp.ClientSession() as session, session.delete(f"{pipe.sim_url}/_sim/faults") as response:
        assert response.status < 300

    async def gate_complete() -> bool:
        return await rows_of(pipe, "gate") == N

    await pipe.wait_for("gate to recover and catch up", gate_complete, timeout=120)
    same = await pipe.fetchval(
        "SELECT count(*) FROM ohlcv b JOIN ohlcv g ON g.ts = b.ts AND g.exchange = 'gate' "
        "WHERE b.exchange = 'binance' AND (b.open, b.high, b.low, b.close, b.volume) = (g.open, g.high, g.low, g.close, g.volume)"
    )
    assert same == N, "both exchanges serve the same simulated market: every candle equal"
    assert await extractor_metric(pipe, port, 'cryptoflow_extractor_circuit_open{exchange="gate"}') == 0.0
