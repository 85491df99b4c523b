"""The committed AsyncAPI document is fresh, complete and self-consistent."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from cryptoflow_cli.asyncapi import event_of, generate, parameters, render
from cryptoflow_contracts import ALL_EVENTS, STREAM_SUBJECTS, Stream

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "docs" / "asyncapi" / "cryptoflow.yaml"


async def test_the_committed_document_is_what_the_generator_makes_now() -> None:
    fresh = render(await generate())
    assert fresh == render(await generate()), "two renderings differ: the generator is not deterministic"
    assert COMMITTED.read_text() == fresh, (
        f"{COMMITTED.relative_to(ROOT)} is stale: regenerate it with `python -m cryptoflow_cli.asyncapi`"
    )


def test_check_passes_on_the_committed_file_and_fails_on_a_stale_one(tmp_path: Path) -> None:
    # Another process, another hash seed: the same bytes.
    command = [sys.executable, "-m", "cryptoflow_cli.asyncapi", "--check", "--output"]
    ok = subprocess.run([*command, str(COMMITTED)], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    stale = tmp_path / "cryptoflow.yaml"
    shutil.copy(COMMITTED, stale)
    stale.write_text(stale.read_text().replace("cryptoflow.silver.", "cryptoflow.gold."))
    failed = subprocess.run([*command, str(stale)], capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1
    assert "out of date" in failed.stderr


def test_every_stream_is_a_channel_with_its_event_and_documented_parameters() -> None:
    document = yaml.safe_load(COMMITTED.read_text())
    # The channels come from the events' own routing: every stream carries exactly one event.
    assert sorted(event.STREAM for event in ALL_EVENTS) == sorted(Stream), "a stream without its event"
    channels = document["channels"]
    for stream in Stream:
        event = event_of(stream)
        address = event.SUBJECT
        # The pattern, its {parameters} as wildcards, is in the stream's namespace.
        wildcard = ".".join("*" if part.startswith("{") else part for part in address.split("."))
        assert wildcard.startswith(STREAM_SUBJECTS[stream].removesuffix(">")), address
        documented = channels[stream.value]
        assert documented["address"] == address
        assert set(documented.get("parameters", {})) == {p[1:-1] for p in address.split(".") if p.startswith("{")}
        assert set(documented.get("parameters", {})) <= set(parameters())
        message = resolve(document, documented["messages"]["Message"]["$ref"])
        assert message["payload"] == {"$ref": f"#/components/schemas/{event.__name__}"}


def test_every_service_subscription_names_the_event_it_receives() -> None:
    document = yaml.safe_load(COMMITTED.read_text())
    received = {name: op for name, op in document["operations"].items() if op["action"] == "receive"}
    assert {"lake-writer/raw", "transformer/lake", "warehouse-loader/silver"} <= set(received)
    expected = {
        "lake-writer/raw": "RawSnapshot",
        "transformer/lake": "ObjectWritten",
        "warehouse-loader/silver": "BatchReady",
    }
    for name, event in expected.items():
        message = resolve(document, received[name]["messages"][0]["$ref"])
        assert message["payload"] == {"$ref": f"#/components/schemas/{event}"}


def test_every_reference_resolves() -> None:
    document = yaml.safe_load(COMMITTED.read_text())
    refs = list(references(document))
    assert refs
    for ref in refs:
        resolve(document, ref)


def references(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in references(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in references(value)]
    return []


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"unresolvable {ref}"
        node = node[part]
    if isinstance(node, dict) and set(node) == {"$ref"}:
        return resolve(document, node["$ref"])  # a channel's message is a reference itself
    return node
