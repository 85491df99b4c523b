"""What revisions use to run their SQL."""

from __future__ import annotations

from alembic import op


def run_sql(sql: str) -> None:
    """Run a script of statements exactly as written.

    It goes to the psycopg cursor without parameters (SQLAlchemy would pass an empty parameter
    set, and psycopg would then read every `%` of a `format('%I', …)` as a placeholder), in the
    migration's transaction.
    """
    dbapi_connection = op.get_bind().connection.dbapi_connection
    assert dbapi_connection is not None, "migration connection is closed"
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(sql)
    finally:
        cursor.close()
