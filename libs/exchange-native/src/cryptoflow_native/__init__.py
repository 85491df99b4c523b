"""Exchange-native responses: what an exchange sent, and ccxt's parse of it, offline."""

from .completion import complete
from .extras import OHLCV_EXTRAS, ohlcv_extras, trade_maker_sides
from .jsonable import json_safe
from .replay import RecordedCall, ReplayError, replay

__all__ = [
    "OHLCV_EXTRAS",
    "RecordedCall",
    "ReplayError",
    "complete",
    "json_safe",
    "ohlcv_extras",
    "replay",
    "trade_maker_sides",
]
