"""Issue 15, finding 2 in compose: the warehouse-loader's login is no superuser.

compose's PostgreSQL is set up by deploy/postgres/initdb/*.sql (run by the postgres image as the
superuser on first start). Here they run on a real PostgreSQL the same way, and the roles they
leave behind are checked: the loader's login owns the schema and migrates, but cannot run
programs or read server files; the reader reads and writes nothing; compose connects the loader
as that login and nothing as the superuser."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
import yaml

from .support import COMPOSE_FILE, apply_migrations, drop_roles, role_url, run_compose_init


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE_FILE.read_text()))


def test_compose_connects_the_loader_as_the_owner_login_not_the_superuser() -> None:
    services = compose()["services"]
    postgres = services["postgres"]["environment"]
    loader_url = urlsplit(services["warehouse-loader"]["environment"]["DATABASE_URL"])
    assert loader_url.username == postgres["CRYPTOFLOW_OWNER_USER"]
    assert postgres["POSTGRES_USER"] != postgres["CRYPTOFLOW_OWNER_USER"]
    # No service gets the superuser's password.
    for name, service in services.items():
        if name != "postgres":
            assert "POSTGRES_SUPERUSER_PASSWORD" not in yaml.safe_dump(service.get("environment", {})), name


async def test_the_init_scripts_leave_the_loader_a_schema_owner_without_server_access(
    fresh_database_url: str,
) -> None:
    admin = await asyncpg.connect(fresh_database_url)
    owner, reader = f"cf_owner_{uuid.uuid4().hex[:12]}", f"cf_reader_{uuid.uuid4().hex[:12]}"
    try:
        run_compose_init(fresh_database_url, owner=(owner, "owner-secret"), reader=(reader, "reader-secret"))
        owner_url = role_url(fresh_database_url, owner)
        loader = await asyncpg.connect(owner_url, password="owner-secret")
        try:
            assert not await loader.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await loader.execute("CREATE TEMP TABLE shell (line text); COPY shell FROM PROGRAM 'id'")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await loader.fetchval("SELECT pg_read_file('postgresql.conf')")
            # Its migrations run as itself, and what they create is its own.
            await apply_migrations(owner_url, loader)
            foreign = await loader.fetchval(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner <> current_user"
            )
            assert foreign == 0
        finally:
            await loader.close()
        reader_url = role_url(fresh_database_url, reader)
        as_reader = await asyncpg.connect(reader_url, password="reader-secret")
        try:
            assert await as_reader.fetchval("SELECT count(*) FROM ohlcv") == 0
            with pytest.raises((asyncpg.InsufficientPrivilegeError, asyncpg.ReadOnlySQLTransactionError)):
                await as_reader.execute("DELETE FROM ohlcv_data")
        finally:
            await as_reader.close()
    finally:
        await drop_roles(admin, reader, owner)
        await admin.close()
