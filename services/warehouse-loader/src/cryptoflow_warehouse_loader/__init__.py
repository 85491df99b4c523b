"""The warehouse-loader stage: silver batches, gaps, run reports and quarantine into PostgreSQL."""

from cryptoflow_contracts import Alert, DeadLetter, Loaded, RunReport, Stream
from cryptoflow_runtime import StageSpec

from .app import NAME, build, read_batch
from .config import WarehouseLoaderSettings
from .migrations import current_revision, head_revision, migrate
from .tables import TABLES
from .upsert import load_batch
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
    "STAGE",
    "TABLES",
    "Warehouse",
    "WarehouseLoaderSettings",
    "build",
    "current_revision",
    "head_revision",
    "load_batch",
    "migrate",
    "read_batch",
]
