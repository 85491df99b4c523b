"""`python -m cryptoflow_cli.openapi [--check]`: the OpenAPI document of the read API (docs/openapi.json).

Rendered from the API application itself with its default settings (none read from the
environment), so the committed file can be checked for freshness like the AsyncAPI document:
`--check` exits 1 when it differs from a fresh rendering.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptoflow_api import ApiSettings, create_app

from .generated import write_or_check

DEFAULT_OUTPUT = Path("docs/openapi.json")


def generate() -> dict[str, Any]:
    # model_construct: the defaults as declared, whatever this machine's environment says.
    document: dict[str, Any] = create_app(ApiSettings.model_construct()).openapi()
    return document


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=False, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cryptoflow openapi", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"default: {DEFAULT_OUTPUT}")
    parser.add_argument("--check", action="store_true", help="exit 1 when the file differs from a fresh rendering")
    args = parser.parse_args(argv)
    return write_or_check(
        args.output, render(generate()), check=args.check, regenerate="python -m cryptoflow_cli.openapi"
    )


if __name__ == "__main__":
    sys.exit(main())
