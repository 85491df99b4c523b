"""`cryptoflow warehouse migrate`: bring the warehouse schema to head (what the loader does at start).

Run it as the schema owner (e.g. a deploy job) when loaders connect with the least-privilege
cryptoflow_loader role and WAREHOUSE_LOADER_MIGRATE=false.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from cryptoflow_runtime.postgres import redact

from .stackfile import read_stack


def database_url(explicit: str | None, home: Path) -> str:
    """--database-url, else DATABASE_URL, else the running local stack's (stack.json)."""
    if explicit:
        return explicit
    if url := os.environ.get("DATABASE_URL"):
        return url
    try:
        return read_stack(home).database_url
    except FileNotFoundError:
        raise SystemExit("error: no database: pass --database-url, set DATABASE_URL, or run `cryptoflow up`") from None


def migrate_command(url: str) -> int:
    from cryptoflow_warehouse_loader import current_revision, head_revision, migrate

    applied = migrate(url)
    current = current_revision(url)
    if applied:
        print(f"{redact(url)}: applied {', '.join(applied)}; now at {current}")
    else:
        print(f"{redact(url)}: already at {current} (head {head_revision()})")
    return 0 if current == head_revision() else 1


def main(url: str) -> None:
    sys.exit(migrate_command(url))
