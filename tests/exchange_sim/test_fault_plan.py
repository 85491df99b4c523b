"""Fault specs parse strictly, match precisely, and apply in a deterministic order."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptoflow_exchange_sim import Fault, FaultPlan, faults_from_json, load_fault_file, parse_fault_spec
from cryptoflow_exchange_sim.fault_plan import mutate_records


def test_command_line_specs() -> None:
    assert parse_fault_spec("rate_limit:ohlcv") == Fault("rate_limit", "ohlcv")
    assert parse_fault_spec("rate_limit:binance.ohlcv:count=2,retry_after=1.5,status=418") == Fault(
        "rate_limit", "binance.ohlcv", count=2, retry_after=1.5, status=418
    )
    assert parse_fault_spec("server_error:*:count=always,after=3,body=native") == Fault(
        "server_error", "*", count=None, after=3, body="native"
    )
    assert parse_fault_spec("delay:/api/v3/klines:seconds=2") == Fault("delay", "/api/v3/klines", seconds=2.0)
    assert parse_fault_spec("truncate:trades:cut=body") == Fault("truncate", "trades", cut="body")
    assert parse_fault_spec("drop_field:ohlcv:field=4") == Fault("drop_field", "ohlcv", field="4")
    assert parse_fault_spec("add_field:ticker:field=x,value=[1]") == Fault("add_field", "ticker", field="x", value=[1])


@pytest.mark.parametrize(
    ("spec", "complaint"),
    [
        ("rate_limit", "KIND:ENDPOINT"),
        ("explode:ohlcv", "unknown fault kind"),
        ("rate_limit:ohlcv:count=0", "count"),
        ("rate_limit:ohlcv:count=many", "count"),
        ("rate_limit:ohlcv:colour=red", "unknown fault option"),
        ("rate_limit:ohlcv:count", "OPTION=VALUE"),
        ("server_error:ohlcv:status=404", "500..599"),
        ("delay:ohlcv", "seconds"),
        ("drop_field:ohlcv", "needs a field"),
        ("truncate:ohlcv:cut=half", "cut"),
        ("server_error:ohlcv:body=xml", "body"),
    ],
)
def test_bad_specs_are_refused(spec: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        parse_fault_spec(spec)


def test_json_forms_and_files(tmp_path: Path) -> None:
    one = {"kind": "truncate", "endpoint": "gate.*", "count": "always"}
    assert faults_from_json(one) == faults_from_json([one]) == faults_from_json({"faults": [one]})
    (tmp_path / "plan.json").write_text('{"faults": [{"kind": "delay", "endpoint": "ticker", "seconds": 1}]}')
    assert load_fault_file(tmp_path / "plan.json") == [Fault("delay", "ticker", seconds=1.0)]
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"bad\.json"):
        load_fault_file(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="cannot read"):
        load_fault_file(tmp_path / "missing.json")


@pytest.mark.parametrize(
    ("endpoint", "hits"),
    [
        ("*", [True, True, True]),
        ("ohlcv", [True, True, False]),
        ("gate.ohlcv", [False, True, False]),
        ("gate.*", [False, True, True]),
        ("/api/v3/klines", [True, False, False]),
    ],
)
def test_endpoint_matching(endpoint: str, hits: list[bool]) -> None:
    fault = Fault("truncate", endpoint)
    requests = [("binance", "ohlcv", "/api/v3/klines"), ("gate", "ohlcv", "/api/v4/spot/candlesticks"),
                ("gate", "trades", "/api/v4/spot/trades")]  # fmt: skip
    assert [fault.matches(*request) for request in requests] == hits


def test_decisions_are_ordered_and_counted() -> None:
    plan = FaultPlan(
        [
            Fault("truncate", "*"),
            Fault("drop_field", "*", field="x", count=None),
            Fault("delay", "*", seconds=1.0),
            Fault("rate_limit", "*", after=1),
        ]
    )
    first = plan.decide("binance", "ohlcv", "/api/v3/klines")
    second = plan.decide("binance", "ohlcv", "/api/v3/klines")
    third = plan.decide("binance", "ohlcv", "/api/v3/klines")

    # 1st: delay, then body faults with truncation last; the rate limit waits for `after`.
    assert [f.kind for f in first.applied] == ["delay", "drop_field", "truncate"]
    # 2nd: the rate limit replaces the answer, so the body fault is not used up by it.
    assert (second.replace, second.body) == (Fault("rate_limit", "*", after=1), ())
    # 3rd: truncate (count 1) and the rate limit (count 1) are spent; drop_field is forever.
    assert [f.kind for f in third.applied] == ["drop_field"]
    assert [(f["kind"], f["served"], f["remaining"]) for f in plan.snapshot()] == [
        ("truncate", 1, 0), ("drop_field", 2, "always"), ("delay", 1, 0), ("rate_limit", 1, 0),
    ]  # fmt: skip


def test_field_mutations() -> None:
    records: list[object] = [{"a": 1, "b": 2}, ["t", "o", "h", "l", "c", "v"]]
    mutate_records(records, Fault("drop_field", "*", field="b"), ())
    mutate_records(records, Fault("drop_field", "*", field="close"), ("open_time", "open", "high", "low", "close"))
    mutate_records(records, Fault("add_field", "*", field="z", value=0), ())

    assert records == [{"a": 1, "z": 0}, ["t", "o", "h", "l", "v", 0]]
