"""Exchange-native responses: what an exchange sent, and ccxt's parse of it, offline."""

from .completion import complete, json_safe
from .replay import RecordedCall, ReplayError, replay

__all__ = ["RecordedCall", "ReplayError", "complete", "json_safe", "replay"]
