"""`$CRYPTOFLOW_HOME/stack.json`: where a running local stack's endpoints are."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel


class StackInfo(BaseModel):
    nats_url: str
    database_url: str
    lake_url: str
    exchange_sim_url: str | None
    s3_endpoint_url: str | None = None
    services: dict[str, dict[str, object]] = {}


def default_home() -> Path:
    return Path(os.environ.get("CRYPTOFLOW_HOME", ".cryptoflow")).resolve()


def stack_path(home: Path) -> Path:
    return home / "stack.json"


def write_stack(home: Path, info: StackInfo) -> Path:
    path = stack_path(home)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(info.model_dump(), indent=2) + "\n")
    tmp.replace(path)
    return path


def read_stack(home: Path) -> StackInfo:
    path = stack_path(home)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: is `cryptoflow up` running with CRYPTOFLOW_HOME={home}?")
    return StackInfo.model_validate_json(path.read_text())


def stack_env(home: Path) -> None:
    """Fill NATS_URL, DATABASE_URL, LAKE_URL (and S3_ENDPOINT_URL) from a running stack's
    stack.json, for any of them the environment does not set already."""
    path = stack_path(home)
    if not path.exists():
        return
    info = read_stack(home)
    for name, value in (
        ("NATS_URL", info.nats_url),
        ("DATABASE_URL", info.database_url),
        ("LAKE_URL", info.lake_url),
        ("S3_ENDPOINT_URL", info.s3_endpoint_url),
    ):
        if value and name not in os.environ:
            os.environ[name] = value
