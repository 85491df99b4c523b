"""Exchange-native responses: what an exchange sent, and ccxt's parse of it, offline."""

from .completion import complete, json_safe
from .extras import OHLCV_EXTRAS, ohlcv_extras
from .replay import RecordedCall, ReplayError, replay

__all__ = ["OHLCV_EXTRAS", "RecordedCall", "ReplayError", "complete", "json_safe", "ohlcv_extras", "replay"]
