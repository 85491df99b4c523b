"""`python -m cryptoflow_runtime.streams`: create or update every platform stream, then exit.

The provisioning step of a deployment with NATS authorization (decision 0036): run once as the
admin identity (NATS_URL, NATS_USER, NATS_PASSWORD, NATS_TLS_CA; STREAM_<NAME>_* limits) before
the services start — compose's `nats-init`, the Helm chart's streams Job. The services' own
identities may read stream info but not create, change, purge or delete streams.
"""

from __future__ import annotations

import asyncio
import sys

import nats
import nats.errors

from .jetstream import ensure_streams
from .nats_auth import connect_options
from .redaction import redact_text
from .settings import ConfigError, ServiceSettings, load_settings


async def provision(settings: ServiceSettings) -> None:
    nc = await nats.connect(
        settings.nats_url, name="cryptoflow-streams", connect_timeout=10, **connect_options(settings)
    )
    try:
        await ensure_streams(nc.jetstream())
    finally:
        await nc.close()


def main() -> None:
    try:
        settings = load_settings(ServiceSettings)
        asyncio.run(provision(settings))
    except ConfigError as error:
        print(f"cryptoflow-streams: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except (OSError, nats.errors.Error) as error:
        print(f"cryptoflow-streams: error: {redact_text(str(error)) or type(error).__name__}", file=sys.stderr)
        raise SystemExit(1) from None
    print("cryptoflow-streams: every stream is in place", file=sys.stderr)


if __name__ == "__main__":
    main()
