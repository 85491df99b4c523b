"""Exchange-native responses and stream frames: what an exchange sent, and ccxt's parse of it, offline."""

from .completion import complete
from .extras import OHLCV_EXTRAS, ohlcv_extras, trade_maker_sides
from .jsonable import json_safe
from .replay import RecordedCall, ReplayError, replay
from .stream_extras import (
    candle_closed_flags,
    stream_ohlcv_base_volumes,
    stream_ohlcv_extras,
    stream_trade_maker_sides,
)
from .stream_replay import RecordedStream, StreamReplayError, replay_stream

__all__ = [
    "OHLCV_EXTRAS",
    "RecordedCall",
    "RecordedStream",
    "ReplayError",
    "StreamReplayError",
    "candle_closed_flags",
    "complete",
    "json_safe",
    "ohlcv_extras",
    "replay",
    "replay_stream",
    "stream_ohlcv_base_volumes",
    "stream_ohlcv_extras",
    "stream_trade_maker_sides",
    "trade_maker_sides",
]
