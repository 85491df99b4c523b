"""Prometheus metrics of the API (served at /metrics with the runtime's process metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("cryptoflow_api_requests_total", "HTTP requests answered", ["route", "status"])
REQUEST_SECONDS = Histogram(
    "cryptoflow_api_request_seconds",
    "Time to the response's headers (streamed bodies continue after)",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ROWS_SERVED = Counter("cryptoflow_api_rows_total", "Rows streamed to clients", ["resource", "format"])
BYTES_SERVED = Counter("cryptoflow_api_bytes_total", "Response body bytes streamed to clients", ["resource", "format"])
AUTH_FAILURES = Counter("cryptoflow_api_auth_failures_total", "Requests refused for their key", ["reason"])
RATE_LIMITED = Counter("cryptoflow_api_rate_limited_total", "Requests refused over their key's rate")
LIVE_CLIENTS = Gauge("cryptoflow_api_live_clients", "Connected live clients", ["transport"])
LIVE_MESSAGES = Counter("cryptoflow_api_live_messages_total", "Messages relayed to live clients", ["transport"])
LIVE_DROPPED = Counter(
    "cryptoflow_api_live_dropped_total", "Live clients disconnected for falling behind (queue full)", ["transport"]
)


def _declare_known_series() -> None:
    """Every known label value at 0 from the start: dashboards and alerts see a series (0, not
    "no data") before the first request, drop or row."""
    from .formats import Format
    from .resources import RESOURCES

    for transport in ("sse", "ws"):
        LIVE_CLIENTS.labels(transport)
        LIVE_MESSAGES.labels(transport)
        LIVE_DROPPED.labels(transport)
    for resource in RESOURCES:
        for fmt in Format:
            ROWS_SERVED.labels(resource, fmt.value)
            BYTES_SERVED.labels(resource, fmt.value)


_declare_known_series()
