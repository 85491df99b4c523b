"""The transformer stage: bronze objects → validated silver Parquet → BatchReady on SILVER."""

from cryptoflow_contracts import Anomaly, BatchReady, DeadLetter, Stream
from cryptoflow_runtime import StageSpec

from .app import NAME, build
from .batches import transform_object
from .config import TransformerSettings

STAGE = StageSpec(
    name=NAME,
    module="cryptoflow_transformer.main",
    settings=TransformerSettings,
    build=build,
    consumes=((Stream.LAKE, "transformer"),),
    outputs=(BatchReady, DeadLetter, Anomaly),
    env_prefix="TRANSFORMER_",
    description="bronze → validated silver Parquet, quarantine, derived series",
)

__all__ = ["STAGE", "TransformerSettings", "build", "transform_object"]
