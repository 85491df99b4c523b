"""`cryptoflow-schemas [DIR]`: write every event's JSON Schema, for outside consumers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .events import ALL_EVENTS


def event_schemas() -> dict[str, dict[str, object]]:
    return {cls.__name__: cls.model_json_schema() for cls in ALL_EVENTS}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("directory", nargs="?", type=Path, help="write <Event>.schema.json files here")
    args = parser.parse_args(argv)
    schemas = event_schemas()
    if args.directory is None:
        print(json.dumps(schemas, indent=2, sort_keys=True))
        return
    args.directory.mkdir(parents=True, exist_ok=True)
    for name, schema in schemas.items():
        path = args.directory / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        print(path)
