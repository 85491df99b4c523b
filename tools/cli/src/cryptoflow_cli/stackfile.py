"""`$CRYPTOFLOW_HOME/stack.json`: where a running local stack's endpoints are."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel


class StackInfo(BaseModel):
    """Endpoints of a running stack. The URLs carry credentials (decision 0036): `nats_url` is the
    admin identity's, `database_url` the schema owner's (what the loader connects as),
    `consumer_nats_url` and `reader_database_url` the read-only ones; hence the file's mode 0600."""

    nats_url: str
    database_url: str
    lake_url: str
    exchange_sim_url: str | None
    s3_endpoint_url: str | None = None
    services: dict[str, dict[str, object]] = {}
    consumer_nats_url: str | None = None
    reader_database_url: str | None = None
    # CA certificate of the servers' TLS certificates (`cryptoflow up --tls`).
    tls_ca: str | None = None
    # The read API (services/api): http://127.0.0.1:<port>; keys from `cryptoflow api-key create`.
    api_url: str | None = None


def default_home() -> Path:
    return Path(os.environ.get("CRYPTOFLOW_HOME", ".cryptoflow")).resolve()


def stack_path(home: Path) -> Path:
    return home / "stack.json"


def write_stack(home: Path, info: StackInfo) -> Path:
    """Write stack.json readable by its owner only (mode 0600 from the start: it holds passwords)."""
    path = stack_path(home)
    tmp = path.with_suffix(".json.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(info.model_dump(), indent=2) + "\n")
    tmp.replace(path)
    return path


def read_stack(home: Path) -> StackInfo:
    path = stack_path(home)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is `cryptoflow up` running with CRYPTOFLOW_HOME={home}?")
    return StackInfo.model_validate_json(path.read_text())


def stack_env(home: Path) -> None:
    """Fill NATS_URL, DATABASE_URL, LAKE_URL (and S3_ENDPOINT_URL, NATS_TLS_CA) from a running
    stack's stack.json, for any of them the environment does not set already. The NATS URL is
    the admin identity's (the CLI replays and rebuilds), the database URL the schema owner's."""
    path = stack_path(home)
    if not path.exists():
        return
    info = read_stack(home)
    for name, value in (
        ("NATS_URL", info.nats_url),
        ("DATABASE_URL", info.database_url),
        ("LAKE_URL", info.lake_url),
        ("S3_ENDPOINT_URL", info.s3_endpoint_url),
        ("NATS_TLS_CA", info.tls_ca),
    ):
        if value and name not in os.environ:
            os.environ[name] = value
