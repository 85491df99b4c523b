"""The read API: the warehouse over HTTP (JSON, CSV, Parquet, Arrow) and the public subjects live (SSE, WebSocket)."""

from .app import create_app
from .config import NAME, ApiSettings
from .keys import ApiKey, create_key, list_keys, revoke_keys
from .resources import RESOURCES, Resource

__all__ = [
    "NAME",
    "RESOURCES",
    "ApiKey",
    "ApiSettings",
    "Resource",
    "create_app",
    "create_key",
    "list_keys",
    "revoke_keys",
]
