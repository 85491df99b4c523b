"""Identifier quoting for the SQL the loader builds from its own constants (silver.py, tables.py).

Values never go into SQL text: they are bind parameters or COPY data. Identifiers do, and only
ones we define; `ident` still refuses anything but plain lower-case names, so a typo in a
constant fails loudly instead of producing odd SQL.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_PLAIN = re.compile(r"^[a-z_][a-z0-9_]*$")


def ident(name: str) -> str:
    if not _PLAIN.match(name):
        raise ValueError(f"{name!r} is not a plain SQL identifier")
    return f'"{name}"'


def idents(names: Iterable[str], prefix: str = "") -> str:
    """`"a", "b"` or, with a prefix, `t."a", t."b"`."""
    return ", ".join(f"{prefix}{ident(name)}" for name in names)
