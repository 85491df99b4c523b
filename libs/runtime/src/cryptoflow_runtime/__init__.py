"""Runtime helpers every cryptoflow service shares, written once."""

from .dead_letters import PoisonMessageError, publish_dead_letter, settle_failure
from .jetstream import ensure_kv, ensure_streams, msg_id_headers
from .lake import Lake, ObjectConflictError, open_lake
from .service import Service, run_service
from .settings import ConfigError, DatabaseSettings, LakeSettings, ServiceSettings, load_settings

__all__ = [
    "ConfigError",
    "DatabaseSettings",
    "Lake",
    "LakeSettings",
    "ObjectConflictError",
    "PoisonMessageError",
    "Service",
    "ServiceSettings",
    "ensure_kv",
    "ensure_streams",
    "load_settings",
    "msg_id_headers",
    "open_lake",
    "publish_dead_letter",
    "run_service",
    "settle_failure",
]
