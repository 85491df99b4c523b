"""The transformer stage: bronze objects → validated silver Parquet → BatchReady on SILVER."""

from cryptoflow_contracts import Anomaly, BatchReady, DeadLetter, Stream
from cryptoflow_runtime import StageSpec

from .app import NAME, build
from .batches import transform_object
from .bounds import configure as configure_bounds
from .config import TransformerSettings
from .derived import DerivedConfig, DerivedOutputs, derive
from .state_store import MemoryStateStore, StateStore

STAGE = StageSpec(
    name=NAME,
    module="cryptoflow_transformer.main",
    settings=TransformerSettings,
    build=build,
    consumes=((Stream.LAKE, "transformer"),),
    outputs=(BatchReady, DeadLetter, Anomaly),
    env_prefix="TRANSFORMER_",
    kv_buckets=("state_bucket",),
    description="bronze → validated silver Parquet, quarantine, derived series",
)

__all__ = [
    "STAGE",
    "DerivedConfig",
    "DerivedOutputs",
    "MemoryStateStore",
    "StateStore",
    "TransformerSettings",
    "build",
    "configure_bounds",
    "derive",
    "transform_object",
]
