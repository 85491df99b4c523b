"""The extractor stage: exchanges through ccxt → RawSnapshot pages on RAW (a source: no input)."""

from cryptoflow_contracts import DeadLetter, KnownGap, LiveUpdate, RawSnapshot, SchemaDrift
from cryptoflow_runtime import StageSpec

from .app import NAME, build
from .config import ExtractorSettings
from .jobs import DatasetsSpec

STAGE = StageSpec(
    name=NAME,
    module="cryptoflow_extractor.main",
    settings=ExtractorSettings,
    build=build,
    outputs=(RawSnapshot, KnownGap, SchemaDrift, DeadLetter, LiveUpdate),
    env_prefix="EXTRACTOR_",
    kv_buckets=("checkpoint_bucket", "lease_bucket"),
    description="ccxt polling and websocket streams, checkpoints in JetStream KV, publishes RawSnapshot and LIVE",
)

__all__ = ["STAGE", "DatasetsSpec", "ExtractorSettings", "build"]
