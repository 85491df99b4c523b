"""The API's pure pieces: CSV record boundaries, subject allow-list, content negotiation, cursors,
token buckets."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cryptoflow_api.cursor import decode_cursor, encode_cursor
from cryptoflow_api.formats import Format, negotiate
from cryptoflow_api.live import covered, valid_pattern
from cryptoflow_api.problems import ProblemError
from cryptoflow_api.query import record_boundary
from cryptoflow_api.ratelimit import TokenBucket


@pytest.mark.parametrize(
    ("buffer", "complete"),
    [
        (b"", 0),
        (b"a,b", 0),
        (b"a,b\nc,d", 4),
        (b"a,b\nc,d\n", 8),
        (b'a,"x\ny"\nc,d', 8),  # the first newline is inside a quoted value
        (b'a,"x\ny', 0),
        (b'a,"say ""hi""\n"\nb', 16),  # doubled quotes inside a quoted value
    ],
)
def test_record_boundary_is_the_last_newline_outside_quotes(buffer: bytes, complete: int) -> None:
    assert record_boundary(buffer) == complete


@pytest.mark.parametrize(
    ("requested", "allowed", "expected"),
    [
        ("cryptoflow.live.trades.binance.BTC-USDT", "cryptoflow.live.>", True),
        ("cryptoflow.live.>", "cryptoflow.live.>", True),
        ("cryptoflow.live.*.binance.*", "cryptoflow.live.>", True),
        ("cryptoflow.live", "cryptoflow.live.>", False),
        ("cryptoflow.>", "cryptoflow.live.>", False),
        ("cryptoflow.*.trades", "cryptoflow.live.>", False),
        ("cryptoflow.alerts.stale", "cryptoflow.alerts.*", True),
        ("cryptoflow.alerts.>", "cryptoflow.alerts.*", False),
        ("cryptoflow.alerts.stale.x", "cryptoflow.alerts.*", False),
    ],
)
def test_a_pattern_is_covered_only_when_every_subject_it_matches_is(
    requested: str, allowed: str, expected: bool
) -> None:
    assert covered(requested, allowed) is expected


@pytest.mark.parametrize("pattern", ["a..b", "a.b>", "a.>.b", "a.b*", " a", ""])
def test_invalid_patterns(pattern: str) -> None:
    assert not valid_pattern(pattern)


@pytest.mark.parametrize(
    ("explicit", "accept", "expected"),
    [
        (Format.CSV, "application/json", Format.CSV),
        (None, None, Format.JSON),
        (None, "*/*", Format.JSON),
        (None, "text/csv", Format.CSV),
        (None, "application/json;q=0.5, application/vnd.apache.arrow.stream", Format.ARROW),
        (None, "application/x-parquet;q=0.9, text/csv;q=0.1", Format.PARQUET),
        (None, "application/xml", None),
        (None, "text/csv;q=0", None),
    ],
)
def test_negotiation(explicit: Format | None, accept: str | None, expected: Format | None) -> None:
    assert negotiate(explicit, accept) is expected


def test_cursors_round_trip_and_name_their_resource() -> None:
    key = (42, datetime(2024, 3, 1, 0, 1, 2, 345678, tzinfo=UTC), "t-1")
    cursor = encode_cursor("trades", key)
    assert decode_cursor("trades", cursor, 3) == key
    for resource, length in (("ohlcv", 3), ("trades", 2)):
        with pytest.raises(ProblemError) as refused:
            decode_cursor(resource, cursor, length)
        assert refused.value.status == 400


def test_token_bucket_allows_its_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate_per_s=2.0, burst=3, tokens=3.0, updated=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)
    assert bucket.take(0.5) == 0.0  # one token back after half a second at 2/s
