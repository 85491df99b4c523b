"""A throwaway dataset and a throwaway stage, added through the registries alone (here, in the
test, not in the product), show up wherever the platform lists datasets and stages: `up`,
`status`, `replay`, the AsyncAPI document, events and the warehouse's tables."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import nats
import pytest
from cryptoflow_cli import asyncapi, replay, stages, status, up
from cryptoflow_contracts import SILVER_TABLES, Dataset, Loaded, RawSnapshot, Stage, Stream
from cryptoflow_contracts.silver import ColumnType, SilverTable, register_table
from cryptoflow_runtime import Consumer, Service, ServiceSettings, StageSpec, ensure_streams, msg_id_headers
from cryptoflow_warehouse_loader import TABLES
from pydantic import Field
from pydantic_settings import SettingsConfigDict

AUDIT = "audit"
FUNDING = "funding"
FUNDING_TABLE = SilverTable(
    "funding_rates",
    (
        ("exchange", ColumnType.TEXT),
        ("symbol", ColumnType.TEXT),
        ("ts", ColumnType.TIMESTAMP),
        ("rate", ColumnType.FLOAT),
        ("source_event_id", ColumnType.TEXT),
    ),
    key=("exchange", "symbol", "ts"),
    not_null=frozenset({"rate"}),
)


class AuditSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="AUDIT_", extra="ignore")
    durable: str = Field(default=AUDIT, description="JetStream durable consumer name")


AUDITED: list[Loaded] = []


async def build_audit(settings: AuditSettings) -> Service:
    """A stage that keeps every Loaded event it sees: one consumer, one typed handler."""
    service = Service(AUDIT, settings)

    @service.consume(
        Consumer(
            Loaded,
            Stage(AUDIT),
            settings.durable,
            ack_wait_s=30,
            max_deliver=3,
            title="audit/warehouse",
            description="Loaded events, audited",
        )
    )
    async def on_loaded(loaded: Loaded) -> None:
        AUDITED.append(loaded)

    return service


@pytest.fixture
def registered() -> Iterator[StageSpec]:
    Stage.register(AUDIT)
    Dataset.register(FUNDING)
    register_table(FUNDING_TABLE)
    spec = StageSpec(
        name=AUDIT,
        module="audit_stage.main",
        settings=AuditSettings,
        build=build_audit,
        consumes=((Stream.WAREHOUSE, AUDIT),),
        outputs=(),
        env_prefix="AUDIT_",
    )
    stages.register(spec)
    AUDITED.clear()
    try:
        yield spec
    finally:
        stages.unregister(AUDIT)
        SILVER_TABLES.pop(FUNDING_TABLE.name, None)
        Dataset.unregister(FUNDING)
        Stage.unregister(AUDIT)


def test_the_throwaway_stage_is_started_by_up_and_watched_by_status(registered: StageSpec) -> None:
    planned = {proc.name: (proc, port) for proc, port in up.service_processes({"NATS_URL": "nats://x"})}
    proc, port = planned[AUDIT]
    assert proc.env["AUDIT_HTTP_PORT"] == str(port)
    assert stages.MODULES[AUDIT] == "audit_stage.main"
    # Consumers first: the new last stage starts before the ones feeding it.
    assert next(iter(planned)) == AUDIT
    assert status.consumers()[AUDIT] is Stream.WAREHOUSE
    assert AUDIT in stages.replayable()


async def test_the_throwaway_stage_and_dataset_are_in_the_asyncapi_document(registered: StageSpec) -> None:
    document = await asyncapi.generate()
    channel = document["channels"]["audit.warehouse"]
    assert channel["address"] == "cryptoflow.warehouse.>"
    message = document["components"]["messages"][channel["messages"]["SubscribeMessage"]["$ref"].rsplit("/", 1)[1]]
    assert message["payload"] == {"$ref": "#/components/schemas/Loaded"}
    assert FUNDING in document["channels"]["RAW"]["parameters"]["dataset"]["enum"]
    assert "funding_rates" in document["channels"]["SILVER"]["parameters"]["table"]["enum"]
    assert AUDIT in document["channels"]["DLQ"]["parameters"]["stage"]["enum"]
    assert FUNDING in document["components"]["schemas"]["Dataset"]["enum"]


def test_the_throwaway_dataset_flows_through_events_replay_filters_and_the_warehouse(registered: StageSpec) -> None:
    snapshot = RawSnapshot(
        dataset=FUNDING,  # type: ignore[arg-type]
        exchange="binance",
        symbol="BTC/USDT",
        fetched_at=datetime(2024, 1, 1, tzinfo=UTC),
        payload=[{"rate": 0.0001}],
    )
    assert snapshot.dataset is Dataset(FUNDING)
    assert snapshot.subject() == "cryptoflow.raw.funding.binance.BTC-USDT"
    assert RawSnapshot.model_validate_json(snapshot.to_json()) == snapshot
    assert replay.ReplayFilter.parse("binance/*/funding").dataset == FUNDING
    table = TABLES["funding_rates"]
    assert table.storage == "funding_rates_data"
    assert "rate" in table.silver.not_null


@pytest.fixture
async def warehouse_event(fresh_nats_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Loaded]:
    monkeypatch.setenv("NATS_URL", fresh_nats_url)
    event = Loaded(
        dataset=Dataset.OHLCV,
        table="ohlcv",
        batch_event_id="BatchReady-1",
        rows_inserted=3,
        rows_updated=0,
        rows_unchanged=0,
        already_loaded=False,
    )
    nc = await nats.connect(fresh_nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    await js.publish(event.subject(), event.to_json(), headers=msg_id_headers(event.event_id))
    await nc.close()
    yield event


async def test_replay_runs_the_throwaway_stage_handler(registered: StageSpec, warehouse_event: Loaded) -> None:
    handled = await replay.replay(AUDIT, replay.Position(seq=1), None, replay.ReplayFilter())
    assert handled == 1
    assert AUDITED == [warehouse_event]


def test_replay_of_an_unknown_stage_names_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert replay.run_replay("nope", "1", None, None) == 2
    assert "no stage 'nope'" in capsys.readouterr().err
