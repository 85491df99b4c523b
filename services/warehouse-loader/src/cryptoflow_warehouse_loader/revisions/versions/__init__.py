"""Warehouse schema revisions, oldest first (vNNNN_*.py)."""
