"""A redelivered BatchReady changes nothing: not ohlcv, not the ledger."""

from __future__ import annotations

import aiohttp
import nats

from .harness import Pipeline
from .test_end_to_end import N, start_random_walk

ALREADY_LOADED = 'cryptoflow_warehouse_batches_total{dataset="ohlcv",outcome="already_loaded"}'
LOADED = 'cryptoflow_warehouse_batches_total{dataset="ohlcv",outcome="loaded"}'


async def http_text(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return await response.text()


def metric_value(exposition: str, series: str) -> float:
    for line in exposition.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


async def test_redelivered_batch_ready_leaves_ohlcv_and_ledger_unchanged(file_pipeline: Pipeline) -> None:
    pipe = file_pipeline
    start_random_walk(pipe)
    procs = pipe.start_all()

    async def complete() -> bool:
        return await pipe.ohlcv_count() == 2 * N

    await pipe.wait_for("all rows", complete)
    snapshot_sql = "SELECT * FROM ohlcv ORDER BY exchange, symbol, timeframe, ts"
    before_rows = await pipe.fetch(snapshot_sql)
    before_ledger = await pipe.fetch("SELECT * FROM batches ORDER BY batch_id")
    loaded_events = len(await pipe.stream_messages("WAREHOUSE"))

    silver = await pipe.stream_messages("SILVER")
    assert silver, "no BatchReady to redeliver"
    nc = await nats.connect(pipe.nats_url)
    try:
        js = nc.jetstream()
        for msg in silver:
            # A new Nats-Msg-Id gets past the duplicate window: the loader really sees it again.
            await js.publish(
                msg.subject, msg.data, headers={"Nats-Msg-Id": f"redeliver-{msg.metadata.sequence.stream}"}
            )
    finally:
        await nc.close()

    loader_metrics = f"http://127.0.0.1:{procs['warehouse-loader'].http_port}/metrics"

    async def all_redeliveries_seen() -> bool:
        return metric_value(await http_text(loader_metrics), ALREADY_LOADED) >= len(silver)

    await pipe.wait_for("the loader to see every redelivered batch", all_redeliveries_seen)
    metrics = await http_text(loader_metrics)
    assert metric_value(metrics, ALREADY_LOADED) == len(silver)
    assert metric_value(metrics, LOADED) == len(silver)
    # Loaded is keyed on the batch, so the redelivery's Loaded was a duplicate JetStream dropped.
    assert len(await pipe.stream_messages("WAREHOUSE")) == loaded_events
    assert await pipe.fetch(snapshot_sql) == before_rows
    assert await pipe.fetch("SELECT * FROM batches ORDER BY batch_id") == before_ledger
