"""Alembic environment and revisions of the warehouse schema (see ../migrations.py)."""
