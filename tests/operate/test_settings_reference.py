"""docs/settings.md is what the generator makes from the settings classes now, and complete."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptoflow_cli.settings_reference import missing_descriptions, render, service_settings, settings_of
from cryptoflow_contracts import Stream
from cryptoflow_runtime.settings import STREAM_KNOBS, stream_env_name

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "docs" / "settings.md"


def test_the_committed_reference_is_what_the_generator_makes_now() -> None:
    fresh = render()
    assert COMMITTED.read_text() == fresh, (
        f"{COMMITTED.relative_to(ROOT)} is stale: regenerate it with `python -m cryptoflow_cli.settings_reference`"
    )


def test_check_passes_on_the_committed_file_and_fails_on_a_stale_one(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "cryptoflow_cli.settings_reference", "--check", "--output"]
    ok = subprocess.run([*command, str(COMMITTED)], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    stale = tmp_path / "settings.md"
    shutil.copy(COMMITTED, stale)
    stale.write_text(stale.read_text().replace("`EXTRACTOR_PAGE_LIMIT`", "`EXTRACTOR_PAGE_SIZE`"))
    failed = subprocess.run([*command, str(stale)], capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1
    assert "out of date" in failed.stderr


def test_every_variable_of_every_service_is_documented() -> None:
    text = COMMITTED.read_text()
    for service, cls in service_settings().items():
        for setting in settings_of(service, cls):
            assert f"`{setting.variable}`" in text, f"{setting.variable} ({service}) is missing"
    for knob in STREAM_KNOBS:
        assert f"`STREAM_<NAME>_{knob}`" in text
    assert all(f"`{stream.value}`" in text for stream in Stream)
    assert stream_env_name(Stream.RAW, "MAX_AGE_S") == "STREAM_RAW_MAX_AGE_S"


@pytest.mark.parametrize(
    ("variable", "field"),
    [("NATS_URL", "nats_url"), ("EXTRACTOR_PAGE_LIMIT", "page_limit"), ("LAKE_URL", "lake_url")],
)
def test_documented_names_are_the_ones_pydantic_settings_reads(
    monkeypatch: pytest.MonkeyPatch, variable: str, field: str
) -> None:
    classes = service_settings()
    owners = [cls for cls in classes.values() if field in cls.model_fields]
    value = {"nats_url": "nats://elsewhere:4222", "page_limit": "7", "lake_url": "s3://bucket/x"}[field]
    monkeypatch.setenv(variable, value)
    for cls in owners:
        assert str(getattr(cls(), field)) == value, f"{cls.__name__} does not read {variable}"


def test_every_setting_has_a_description() -> None:
    missing = missing_descriptions()
    assert missing == [], f"settings without a Field(description=...): {', '.join(missing)}"
