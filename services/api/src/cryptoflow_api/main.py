"""`cryptoflow-api`: run the API with uvicorn."""

from __future__ import annotations

import sys

import uvicorn
from cryptoflow_runtime import ConfigError, load_settings
from cryptoflow_runtime.logs import configure_logging
from cryptoflow_runtime.tracing import configure_tracing

from .app import create_app
from .config import NAME, ApiSettings


def main() -> None:
    try:
        settings = load_settings(ApiSettings)
    except ConfigError as error:
        print(f"{NAME}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(NAME, settings.log_level)
    configure_tracing(NAME, settings.otlp_endpoint)
    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        # Our own request lines (observe middleware) leave the query string out: it may hold a key.
        access_log=False,
        log_config=None,
        proxy_headers=True,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
