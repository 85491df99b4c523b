"""The lake-writer stage: RAW snapshots → immutable bronze objects → ObjectWritten on LAKE."""

from cryptoflow_contracts import DeadLetter, ObjectWritten, Stream
from cryptoflow_runtime import StageSpec

from .app import NAME, build
from .config import LakeWriterSettings
from .objects import BronzeObject, build_objects, decompress, partition_date, partition_prefix, read_object

STAGE = StageSpec(
    name=NAME,
    module="cryptoflow_lake_writer.main",
    settings=LakeWriterSettings,
    build=build,
    consumes=((Stream.RAW, "lake-writer"),),
    outputs=(ObjectWritten, DeadLetter),
    env_prefix="LAKE_WRITER_",
    description="batches RAW into immutable bronze objects",
)

__all__ = [
    "STAGE",
    "BronzeObject",
    "LakeWriterSettings",
    "build",
    "build_objects",
    "decompress",
    "partition_date",
    "partition_prefix",
    "read_object",
]
