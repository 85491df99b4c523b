"""The committed OpenAPI document is what the API serves and is fresh (like the AsyncAPI one), and
/docs works offline: every asset it loads is served by the API itself."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
from cryptoflow_api import RESOURCES
from cryptoflow_cli.openapi import generate, render

from .support import serve, settings

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "docs" / "openapi.json"


def test_the_committed_document_is_what_the_generator_makes_now() -> None:
    assert render(generate()) == render(generate()), "two renderings differ"
    assert COMMITTED.read_text() == render(generate()), "stale: regenerate with `make openapi`"
    paths = set(generate()["paths"])
    assert {f"/v1/{name}" for name in RESOURCES} | {"/v1/stream", "/healthz", "/readyz", "/metrics"} <= paths


def test_check_passes_on_the_committed_file_and_fails_on_a_stale_one(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "cryptoflow_cli.openapi", "--check", "--output"]
    ok = subprocess.run([*command, str(COMMITTED)], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    stale = tmp_path / "openapi.json"
    shutil.copy(COMMITTED, stale)
    stale.write_text(stale.read_text().replace("/v1/ohlcv", "/v1/candles"))
    failed = subprocess.run([*command, str(stale)], capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1 and "out of date" in failed.stderr


async def test_docs_work_offline_and_the_served_document_is_the_committed_one(reader_url: str, nats_url: str) -> None:
    with serve(settings(reader_url, nats_url)) as base:
        async with httpx.AsyncClient(base_url=base) as client:
            page = await client.get("/docs")
            assert page.status_code == 200
            assets = re.findall(r"""(?:src|href)=["']([^"']+)["']|url: ?['"]([^'"]+)['"]""", page.text)
            urls = [a or b for a, b in assets]
            assert urls, "the page loads its assets"
            assert not [u for u in urls if u.startswith(("http://", "https://", "//"))], urls
            for url in urls:
                assert (await client.get(url)).status_code == 200, url
            served = await client.get("/openapi.json")
            assert served.json() == generate()
