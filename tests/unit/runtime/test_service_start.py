"""A service starting while JetStream does not answer yet (a cluster node killed, a leader
election) waits for it instead of exiting: found by the three-node chaos cell, where the loader
died at start because creating its second subscription timed out."""

from __future__ import annotations

import asyncio
from typing import Any

import nats
import nats.errors
import pytest
from cryptoflow_contracts import Dataset, Loaded, Stage
from cryptoflow_runtime.consume import Consumer
from cryptoflow_runtime.jetstream import ensure_streams, msg_id_headers
from cryptoflow_runtime.service import Service
from cryptoflow_runtime.settings import ServiceSettings
from nats.js.manager import JetStreamManager


def loaded(n: int) -> Loaded:
    return Loaded(
        dataset=Dataset.OHLCV,
        table="ohlcv",
        batch_event_id=f"BatchReady-{n}",
        rows_inserted=n,
        rows_updated=0,
        rows_unchanged=0,
        already_loaded=False,
    )


async def test_a_service_starts_and_consumes_although_its_first_jetstream_requests_time_out(
    fresh_nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_consumer_info = JetStreamManager.consumer_info
    timeouts = {"left": 3}

    async def flaky_consumer_info(self: JetStreamManager, *args: Any, **kwargs: Any) -> Any:
        if timeouts["left"]:
            timeouts["left"] -= 1
            raise nats.errors.TimeoutError
        return await real_consumer_info(self, *args, **kwargs)

    monkeypatch.setattr(JetStreamManager, "consumer_info", flaky_consumer_info)

    service = Service("start-probe", ServiceSettings(nats_url=fresh_nats_url))
    seen: list[Loaded] = []
    got_both = asyncio.Event()

    @service.consume(
        Consumer(
            Loaded,
            Stage.WAREHOUSE_LOADER,
            "start-probe",
            ack_wait_s=30,
            max_deliver=3,
            title="probe",
            description="Loaded events seen by a service that started through timeouts",
        )
    )
    async def on_loaded(event: Loaded) -> None:
        seen.append(event)
        if len(seen) == 2:
            got_both.set()

    await service.app.start()
    try:
        assert timeouts["left"] == 0, "the start never met the timeouts it should have waited through"
        nc = await nats.connect(fresh_nats_url)
        try:
            js = nc.jetstream()
            await ensure_streams(js)
            for event in (loaded(1), loaded(2)):
                await js.publish(event.subject(), event.to_json(), headers=msg_id_headers(event.event_id))
            await asyncio.wait_for(got_both.wait(), timeout=30)
            info = await js.consumer_info("WAREHOUSE", "start-probe")
            assert info.config.filter_subject == "cryptoflow.warehouse.>"
        finally:
            await nc.close()
    finally:
        await service.app.stop()
    assert [e.batch_event_id for e in seen] == ["BatchReady-1", "BatchReady-2"]
