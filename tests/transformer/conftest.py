"""Transformer tests run against real lakes (a directory here; S3 where a test asks for it)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptoflow_runtime.lake import FileLake


@pytest.fixture
def lake(tmp_path: Path) -> FileLake:
    return FileLake(f"file://{tmp_path / 'lake'}")
