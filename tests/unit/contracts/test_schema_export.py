"""`cryptoflow-schemas`: one valid JSON Schema per event."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptoflow_contracts import ALL_EVENTS
from cryptoflow_contracts.schema_export import main


def test_main_writes_one_schema_file_per_event(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "schemas" / "nested"  # created by main
    main([str(out)])
    expected = {f"{cls.__name__}.schema.json" for cls in ALL_EVENTS}
    assert {p.name for p in out.iterdir()} == expected
    printed = capsys.readouterr().out.split()
    assert sorted(Path(p).name for p in printed) == sorted(expected)
    for cls in ALL_EVENTS:
        schema = json.loads((out / f"{cls.__name__}.schema.json").read_text())
        assert schema["type"] == "object"
        assert schema["title"] == cls.__name__
        properties = schema["properties"]
        assert "event_id" in properties
        assert "schema_version" in properties
        # Every model field is described, and nothing else.
        assert set(properties) == set(cls.model_fields)
        assert schema.get("additionalProperties") is False  # extra="forbid"


def test_main_is_idempotent(tmp_path: Path) -> None:
    main([str(tmp_path)])
    first = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    main([str(tmp_path)])
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == first


def test_main_without_directory_prints_all_schemas(capsys: pytest.CaptureFixture[str]) -> None:
    main([])
    schemas = json.loads(capsys.readouterr().out)
    assert set(schemas) == {cls.__name__ for cls in ALL_EVENTS}
    for schema in schemas.values():
        assert {"event_id", "schema_version"} <= set(schema["properties"])
