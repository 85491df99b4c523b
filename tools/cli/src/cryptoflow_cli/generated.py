"""Files generated from the code (AsyncAPI document, settings reference): written, or checked fresh."""

from __future__ import annotations

import sys
from pathlib import Path


def write_or_check(path: Path, text: str, *, check: bool, regenerate: str) -> int:
    """Write `text` to `path`, or with `check` exit-code 1 when the committed file differs from it."""
    if check:
        current = path.read_text() if path.exists() else None
        if current != text:
            print(f"{path} is out of date: regenerate it with `{regenerate}`", file=sys.stderr)
            return 1
        print(f"{path} is up to date")
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(path)
    return 0
