"""Subjects: tokens, and every subject falling under its own stream's wildcard only."""

from __future__ import annotations

import pytest
from cryptoflow_contracts import (
    SILVER_TABLES,
    STREAM_SUBJECTS,
    Dataset,
    Stage,
    Stream,
    dlq_subject,
    lake_subject,
    raw_subject,
    silver_subject,
    symbol_token,
    warehouse_subject,
)


def nats_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` is exactly one token, `>` one or more trailing tokens."""
    pattern_tokens, subject_tokens = pattern.split("."), subject.split(".")
    for index, token in enumerate(pattern_tokens):
        if token == ">":
            return len(subject_tokens) > index
        if index >= len(subject_tokens):
            return False
        if token != "*" and token != subject_tokens[index]:
            return False
    return len(subject_tokens) == len(pattern_tokens)


def test_matcher_itself() -> None:
    assert nats_matches("a.>", "a.b")
    assert nats_matches("a.>", "a.b.c")
    assert not nats_matches("a.>", "a")
    assert not nats_matches("a.>", "b.a")
    assert nats_matches("a.*.c", "a.b.c")
    assert not nats_matches("a.*.c", "a.b.d")
    assert not nats_matches("a.*", "a.b.c")


def test_symbol_token() -> None:
    assert symbol_token("BTC/USDT") == "BTC-USDT"
    assert symbol_token("ETH/BTC") == "ETH-BTC"


@pytest.mark.parametrize("bad", ["BTC.USDT", "BTC*", "BTC>", "*", ">", "BTC USDT", ""])
def test_symbol_token_rejects_subject_metacharacters(bad: str) -> None:
    with pytest.raises(ValueError):
        symbol_token(bad)


@pytest.mark.parametrize("bad_exchange", ["bin.ance", "bin*", "bin>", "", "a/b"])
def test_exchange_token_rejected_in_every_subject(bad_exchange: str) -> None:
    with pytest.raises(ValueError):
        raw_subject(Dataset.OHLCV, bad_exchange, "BTC/USDT")
    with pytest.raises(ValueError):
        lake_subject(Dataset.OHLCV, bad_exchange, "BTC/USDT")
    with pytest.raises(ValueError):
        silver_subject("ohlcv", bad_exchange, "BTC/USDT")


@pytest.mark.parametrize("bad_symbol", ["BTC.X/USDT", "BTC/*", "BTC/>"])
def test_raw_subject_rejects_bad_symbol(bad_symbol: str) -> None:
    with pytest.raises(ValueError):
        raw_subject(Dataset.OHLCV, "binance", bad_symbol)


def all_subjects() -> list[tuple[Stream, str]]:
    subjects: list[tuple[Stream, str]] = []
    for dataset in Dataset:
        subjects.append((Stream.RAW, raw_subject(dataset, "binance", "BTC/USDT")))
        subjects.append((Stream.LAKE, lake_subject(dataset, "binance", "BTC/USDT")))
        subjects.append((Stream.WAREHOUSE, warehouse_subject(dataset)))
        for stage in Stage:
            subjects.append((Stream.DLQ, dlq_subject(stage, dataset)))
    for table in SILVER_TABLES:
        subjects.append((Stream.SILVER, silver_subject(table, "binance", "BTC/USDT")))
    for stage in Stage:
        subjects.append((Stream.DLQ, dlq_subject(stage, None)))
    return subjects


@pytest.mark.parametrize(("stream", "subject"), all_subjects(), ids=lambda v: str(v))
def test_subject_falls_under_its_stream_only(stream: Stream, subject: str) -> None:
    assert nats_matches(STREAM_SUBJECTS[stream], subject), (stream, subject)
    others = [s for s in Stream if s is not stream and nats_matches(STREAM_SUBJECTS[s], subject)]
    assert others == [], f"{subject} also captured by {others}"
    # A published subject is concrete: no wildcards, no empty tokens.
    tokens = subject.split(".")
    assert all(tokens) and "*" not in tokens and ">" not in tokens


def test_every_stream_has_a_subject_namespace() -> None:
    assert set(STREAM_SUBJECTS) == set(Stream)
    assert len(set(STREAM_SUBJECTS.values())) == len(Stream)


def test_subject_layouts() -> None:
    assert raw_subject(Dataset.OHLCV, "binance", "BTC/USDT") == "cryptoflow.raw.ohlcv.binance.BTC-USDT"
    assert lake_subject(Dataset.OHLCV, "binance", "BTC/USDT") == "cryptoflow.lake.ohlcv.binance.BTC-USDT"
    assert silver_subject("indicators", "binance", "BTC/USDT") == "cryptoflow.silver.indicators.binance.BTC-USDT"
    assert warehouse_subject(Dataset.OHLCV) == "cryptoflow.warehouse.ohlcv"
    assert dlq_subject(Stage.LAKE_WRITER, Dataset.OHLCV) == "cryptoflow.dlq.lake-writer.ohlcv"
    assert dlq_subject(Stage.EXTRACTOR, None) == "cryptoflow.dlq.extractor.unknown"
