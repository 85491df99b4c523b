"""Prometheus metrics every stage reports, with the same names and labels everywhere."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES_PROCESSED = Counter(
    "cryptoflow_messages_processed_total",
    "Input messages a stage finished (acked after its side effect)",
    ["service", "dataset"],
)
MESSAGES_FAILED = Counter(
    "cryptoflow_messages_failed_total",
    "Input messages whose processing raised (they are retried or dead-lettered)",
    ["service", "dataset", "error"],
)
DEAD_LETTERS = Counter(
    "cryptoflow_dead_letters_total",
    "DeadLetter events published",
    ["service", "dataset", "reason"],
)
HANDLER_SECONDS = Histogram(
    "cryptoflow_handler_seconds",
    "Time to process one input batch, side effects included",
    ["service"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BATCH_SIZE = Histogram(
    "cryptoflow_batch_messages",
    "Messages per fetched batch",
    ["service"],
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000),
)
CONSUMER_PENDING = Gauge(
    "cryptoflow_consumer_pending_messages",
    "Messages in the stream not yet delivered to the durable consumer",
    ["service", "stream", "consumer"],
)
CONSUMER_ACK_PENDING = Gauge(
    "cryptoflow_consumer_ack_pending_messages",
    "Messages delivered to the durable consumer and not acknowledged yet",
    ["service", "stream", "consumer"],
)
CONSUMER_REDELIVERED = Gauge(
    "cryptoflow_consumer_redelivered_messages",
    "Messages the durable consumer has redelivered at least once",
    ["service", "stream", "consumer"],
)
