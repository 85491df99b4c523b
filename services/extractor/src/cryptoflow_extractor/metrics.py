"""Extractor metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
REQUEST_SECONDS = Histogram(
    "cryptoflow_extractor_request_seconds",
    "Exchange request latency",
    ["exchange", "dataset"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RATE_LIMIT_WAIT = Counter(
    "cryptoflow_extractor_rate_limit_wait_seconds_total",
    "Seconds requests waited for the exchange's rate limiter (including Retry-After pauses)",
    ["exchange"],
)
CIRCUIT_OPEN = Gauge(
    "cryptoflow_extractor_circuit_open",
    "1 while the exchange's circuit breaker is open",
    ["exchange"],
)
DRIFT_EVENTS = Counter(
    "cryptoflow_extractor_schema_drift_total",
    "Raw payload fields that appeared, vanished or changed type against the baseline",
    ["exchange", "dataset", "change"],
)
PAGES_DEAD_LETTERED = Counter(
    "cryptoflow_extractor_pages_dead_lettered_total",
    "Exchange responses that failed validation and went to DLQ",
    ["exchange", "dataset", "reason"],
)
KNOWN_GAPS = Counter(
    "cryptoflow_extractor_known_gaps_total",
    "Intervals the exchange does not have, recorded as known gaps",
    ["exchange", "symbol", "timeframe"],
)
SNAPSHOTS_PUBLISHED = Counter(
    "cryptoflow_extractor_snapshots_published_total",
    "Ticker and order-book snapshots published to RAW",
    ["exchange", "symbol", "dataset"],
)
TRADES_PUBLISHED = Counter(
    "cryptoflow_extractor_trades_published_total",
    "Trades published to RAW",
    ["exchange", "symbol"],
)
NEWEST_RECORD = Gauge(
    "cryptoflow_extractor_newest_record_timestamp_seconds",
    "Close time of the newest published record (staleness = time() - this)",
    ["exchange", "symbol", "dataset", "timeframe"],
)
JOBS_OWNED = Gauge("cryptoflow_extractor_jobs_owned", "Jobs this replica holds the lease of (and runs)")
LEASE_CHANGES = Counter(
    "cryptoflow_extractor_lease_changes_total",
    "Job leases taken, handed over (the assignment moved them) and lost (not renewed in time)",
    ["change"],
)
STREAM_MESSAGES = Counter(
    "cryptoflow_extractor_stream_messages_total",
    "Websocket frames received by stream jobs (rate: the stream's message rate)",
    ["exchange", "symbol", "dataset"],
)
STREAM_LAST_MESSAGE = Gauge(
    "cryptoflow_extractor_stream_last_message_timestamp_seconds",
    "When the stream's last frame arrived (its age: time() - this)",
    ["exchange", "symbol", "dataset"],
)
STREAM_RECONNECTS = Counter(
    "cryptoflow_extractor_stream_reconnects_total",
    "Stream connections given up and opened again, by reason (stall, the error class)",
    ["exchange", "symbol", "dataset", "reason"],
)
STREAM_RESYNCS = Counter(
    "cryptoflow_extractor_stream_resyncs_total",
    "Order books thrown away and synchronised again, by reason (sequence_gap, crossed, checksum, ...)",
    ["exchange", "symbol", "reason"],
)
STREAM_REST_FILLED = Counter(
    "cryptoflow_extractor_stream_rest_filled_total",
    "Records a stream job fetched by REST to fill what its stream missed (connects, stalls, jumps)",
    ["exchange", "symbol", "dataset"],
)
LIVE_PUBLISHED = Counter(
    "cryptoflow_extractor_live_updates_total",
    "Updates published on LIVE subjects",
    ["exchange", "dataset"],
)
ARCHIVE_FILES = Counter(
    "cryptoflow_extractor_archive_files_total",
    "Bulk archive files by outcome: loaded, skipped (loaded before), replaced (new checksum), missing, corrupt",
    ["exchange", "timeframe", "outcome"],
)
AGGREGATOR_COINS = Counter(
    "cryptoflow_extractor_aggregator_coins_total",
    "Coins published from an aggregator's market listing",
    ["provider"],
)
AGGREGATOR_QUOTA_REMAINING = Gauge(
    "cryptoflow_extractor_aggregator_quota_remaining",
    "Requests left of the provider plan's monthly quota (counted ones only)",
    ["provider"],
)
