"""redact(): a DSN for logs, without its password."""

from __future__ import annotations

import pytest
from cryptoflow_runtime.postgres import redact


@pytest.mark.parametrize(
    ("dsn", "secret", "kept"),
    [
        ("postgresql://loader:s3cret@db:5432/cryptoflow", "s3cret", ["postgresql://", "loader", "db:5432/cryptoflow"]),
        ("postgres://u:p@ss:w0rd@h/db", "p@ss:w0rd", ["postgres://", "u", "h/db"]),
        (
            "postgresql://u:secret@127.0.0.1:5432/db?sslmode=require",
            "secret",
            ["u", "127.0.0.1:5432/db?sslmode=require"],
        ),
    ],
)
def test_password_is_hidden(dsn: str, secret: str, kept: list[str]) -> None:
    out = redact(dsn)
    assert secret not in out
    assert "***" in out
    for part in kept:
        assert part in out


@pytest.mark.parametrize("dsn", ["postgresql://postgres@127.0.0.1:5432/cryptoflow", "postgresql:///cryptoflow"])
def test_dsn_without_password_is_unchanged(dsn: str) -> None:
    assert redact(dsn) == dsn


def test_user_survives_exactly() -> None:
    assert redact("postgresql://loader:pw@db/x") == "postgresql://loader:***@db/x"


def test_password_in_query_string_is_hidden() -> None:
    out = redact("postgresql://db:5432/cryptoflow?user=loader&password=s3cret")
    assert "s3cret" not in out
    assert "db:5432/cryptoflow" in out
