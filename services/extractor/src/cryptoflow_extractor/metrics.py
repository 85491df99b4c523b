"""Extractor metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

REQUESTS = Counter(
    "cryptoflow_extractor_requests_total",
    "Exchange requests by outcome (ok or the error class)",
    ["exchange", "dataset", "outcome"],
)
CANDLES_PUBLISHED = Counter(
    "cryptoflow_extractor_candles_published_total",
    "Closed candles published to RAW",
    ["exchange", "symbol", "timeframe"],
)
FRESHNESS_LAG = Gauge(
    "cryptoflow_extractor_freshness_lag_seconds",
    "Now minus the close time of the newest published record",
    ["exchange", "symbol", "dataset", "timeframe"],
)
POLL_ERRORS = Counter(
    "cryptoflow_extractor_poll_errors_total",
    "Polls that failed and will be retried",
    ["exchange", "dataset", "error"],
)
