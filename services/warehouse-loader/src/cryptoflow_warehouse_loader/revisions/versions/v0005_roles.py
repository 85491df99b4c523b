"""Roles: cryptoflow_loader (what the loader needs, nothing more) and cryptoflow_reader (read-only).

Both are NOLOGIN group roles: operators create login roles (or set passwords) from their
secrets and GRANT these to them; no password is ever in a migration (decision 0025). Roles
are cluster-wide, so creation tolerates a role another database's migration already made (or
the administrator created beforehand: then a schema owner without CREATEROLE can migrate,
decision 0036), and downgrade revokes this database's grants but drops no role.

The loader may read and write rows (no DELETE, no TRUNCATE, no DDL); partitions, retention and
mart refreshes go through SECURITY DEFINER functions it may execute. Temp tables need TEMPORARY.
The reader may SELECT everything, including tables created later (default privileges).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from cryptoflow_warehouse_loader.revisions.ddl import run_sql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_FUNCTIONS = """
    cryptoflow_ensure_month_partitions(regclass, timestamptz, timestamptz),
    cryptoflow_drop_partitions_before(regclass, timestamptz),
    cryptoflow_refresh_marts()
"""


def upgrade() -> None:
    run_sql(f"""
    DO $$
    BEGIN
        -- Checked first: a schema owner without CREATEROLE (decision 0036) migrates a cluster
        -- whose administrator created the roles, and CREATE ROLE would be refused outright.
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cryptoflow_loader') THEN
            CREATE ROLE cryptoflow_loader NOLOGIN;
        END IF;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN
        -- Made by this cluster's other database (or concurrently): roles are cluster-wide.
        NULL;
    END
    $$;
    DO $$
    BEGIN
        -- Checked first: a schema owner without CREATEROLE (decision 0036) migrates a cluster
        -- whose administrator created the roles, and CREATE ROLE would be refused outright.
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cryptoflow_reader') THEN
            CREATE ROLE cryptoflow_reader NOLOGIN;
        END IF;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN
        NULL;
    END
    $$;
    DO $$
    BEGIN
        EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO cryptoflow_loader', current_database());
        EXECUTE format('GRANT CONNECT ON DATABASE %I TO cryptoflow_reader', current_database());
    END
    $$;
    GRANT USAGE ON SCHEMA public TO cryptoflow_loader, cryptoflow_reader;

    GRANT SELECT, INSERT, UPDATE ON
        ohlcv, tickers, order_books, trades, indicators,
        batches, series, known_gaps, quarantine, service_runs, alerts
    TO cryptoflow_loader;
    GRANT SELECT ON
        alembic_version, ohlcv_series_base, market_overview, performance, cross_exchange_spread, data_freshness
    TO cryptoflow_loader;
    REVOKE EXECUTE ON FUNCTION {_FUNCTIONS} FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION {_FUNCTIONS} TO cryptoflow_loader;

    GRANT SELECT ON ALL TABLES IN SCHEMA public TO cryptoflow_reader;
    ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO cryptoflow_reader;
    """)


def downgrade() -> None:
    run_sql(f"""
    ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE SELECT ON TABLES FROM cryptoflow_reader;
    REVOKE ALL ON ALL TABLES IN SCHEMA public FROM cryptoflow_loader, cryptoflow_reader;
    REVOKE EXECUTE ON FUNCTION {_FUNCTIONS} FROM cryptoflow_loader;
    GRANT EXECUTE ON FUNCTION {_FUNCTIONS} TO PUBLIC;
    REVOKE USAGE ON SCHEMA public FROM cryptoflow_loader, cryptoflow_reader;
    DO $$
    BEGIN
        EXECUTE format('REVOKE ALL ON DATABASE %I FROM cryptoflow_loader, cryptoflow_reader', current_database());
    END
    $$;
    """)
