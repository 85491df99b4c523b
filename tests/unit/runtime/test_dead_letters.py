"""Dead-letter policy helpers: retry backoff and payload text."""

from __future__ import annotations

import base64
import itertools

import pytest
from cryptoflow_runtime.dead_letters import payload_text, retry_delay_s


def test_retry_delay_starts_at_one_second() -> None:
    assert retry_delay_s(1) == 1.0


def test_retry_delay_doubles_then_caps() -> None:
    delays = [retry_delay_s(n) for n in range(1, 40)]
    assert all(isinstance(d, float) for d in delays)
    cap = max(delays)
    assert cap == 30.0
    first_capped = delays.index(cap)
    # Doubling until the cap...
    for before, after in itertools.pairwise(delays[:first_capped]):
        assert after == 2 * before
    assert delays[first_capped - 1] < cap <= 2 * delays[first_capped - 1]
    # ...and the cap forever after.
    assert set(delays[first_capped:]) == {cap}
    assert retry_delay_s(10_000) == cap


@pytest.mark.parametrize("deliveries", [0, -1])
def test_retry_delay_never_below_one_second(deliveries: int) -> None:
    assert retry_delay_s(deliveries) == 1.0


@pytest.mark.parametrize("text", ["", '{"a": 1}', "ünïcødé ✓ 🚀"])
def test_payload_text_keeps_utf8_text(text: str) -> None:
    assert payload_text(text.encode()) == text


@pytest.mark.parametrize("data", [b"\xff\xfe\x00", b"\x28\xb5\x2f\xfd zstd frame", "é".encode("latin-1")])
def test_payload_text_base64_prefixes_non_utf8(data: bytes) -> None:
    out = payload_text(data)
    assert out.startswith("base64:")
    assert base64.b64decode(out.removeprefix("base64:"), validate=True) == data
