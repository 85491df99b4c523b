"""Exchange-native responses: what an exchange sent, and ccxt's parse of it, offline."""

from .replay import RecordedCall, ReplayError, replay

__all__ = ["RecordedCall", "ReplayError", "replay"]
