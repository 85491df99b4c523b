"""Runtime helpers every cryptoflow service shares, written once."""

from .consume import (
    BatchHandler,
    Consumer,
    EventHandler,
    Outcome,
    Released,
    decode,
    deliver_batch,
    deliver_each,
    in_progress,
)
from .dead_letters import PoisonMessageError, publish_dead_letter, settle_failure
from .jetstream import ensure_kv, ensure_streams, msg_id_headers
from .lake import Lake, ObjectConflictError, open_lake
from .service import OfflineHandler, Service, publish, run_service
from .settings import ConfigError, DatabaseSettings, LakeSettings, ServiceSettings, load_settings
from .stages import StageSpec

__all__ = [
    "BatchHandler",
    "ConfigError",
    "Consumer",
    "DatabaseSettings",
    "EventHandler",
    "Lake",
    "LakeSettings",
    "ObjectConflictError",
    "OfflineHandler",
    "Outcome",
    "PoisonMessageError",
    "Released",
    "Service",
    "ServiceSettings",
    "StageSpec",
    "decode",
    "deliver_batch",
    "deliver_each",
    "ensure_kv",
    "ensure_streams",
    "in_progress",
    "load_settings",
    "msg_id_headers",
    "open_lake",
    "publish",
    "publish_dead_letter",
    "run_service",
    "settle_failure",
]
