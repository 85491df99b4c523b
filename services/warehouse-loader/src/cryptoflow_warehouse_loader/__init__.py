"""The warehouse-loader stage: silver batches, gaps, run reports and quarantine into PostgreSQL."""

from cryptoflow_contracts import Alert, DeadLetter, Loaded, RunReport, Stream
from cryptoflow_runtime import StageSpec

from .app import BATCH_ERRORS, NAME, build, read_batch
from .config import WarehouseLoaderSettings
from .marts import refresh as refresh_marts
from .migrations import current_revision, head_revision, migrate
from .quarantine import load_quarantine
from .tables import TABLES
from .upsert import BatchShapeError, LoadResult, load_batch
from .warehouse import Warehouse

STAGE = StageSpec(
    name=NAME,
    module="cryptoflow_warehouse_loader.main",
    settings=WarehouseLoaderSettings,
    build=build,
    consumes=(
        (Stream.SILVER, "warehouse-loader"),
        (Stream.GAPS, "warehouse-loader-gaps"),
        (Stream.RUNS, "warehouse-loader-runs"),
        (Stream.DLQ, "warehouse-loader-quarantine"),
    ),
    outputs=(Loaded, Alert, RunReport, DeadLetter),
    env_prefix="WAREHOUSE_LOADER_",
    description="silver → PostgreSQL (migrations, COPY + upsert, batch ledger)",
)

__all__ = [
    "BATCH_ERRORS",
    "STAGE",
    "TABLES",
    "BatchShapeError",
    "LoadResult",
    "Warehouse",
    "WarehouseLoaderSettings",
    "build",
    "current_revision",
    "head_revision",
    "load_batch",
    "load_quarantine",
    "migrate",
    "read_batch",
    "refresh_marts",
]
