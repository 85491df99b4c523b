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


def series_view(table: str, columns: tuple[str, ...], series_columns: tuple[str, ...]) -> str:
    """SQL making the view `table` again over `<table>_data` with `columns` in order: the series'
    columns from `series`, `batch_id` from `batches`, the rest from the data table (the layout
    revision 0007 made)."""

    def source(column: str) -> str:
        return "s" if column in series_columns else "b" if column == "batch_id" else "d"

    select = ", ".join(f"{source(c)}.{c}" for c in columns)
    return f"""
    DROP VIEW {table};
    CREATE VIEW {table} AS
    SELECT {select}
    FROM {table}_data d
    LEFT JOIN series s ON s.series_id = d.series_id
    LEFT JOIN batches b ON b.batch_no = d.batch_no;
    GRANT SELECT ON {table} TO cryptoflow_loader, cryptoflow_reader;
    """
