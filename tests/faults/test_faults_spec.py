"""Pure parts of the fault layer: fault specs, outage draws, expectations, scenario checks, Toxiproxy mapping,
reports."""

from __future__ import annotations

import math
import random
import statistics
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from faults_kit import fleet

from tcu_sim.faults import (
    AttackKind,
    BlackHoleFault,
    ClockSkewFault,
    Direction,
    FaultKind,
    FaultSpecError,
    FlakyFault,
    Injection,
    LatencyFault,
    OfflineFault,
    OutageModel,
    Scope,
    SlicerFault,
    describe_fault,
    fault_for_step,
    fault_payload,
    fault_rng,
    parse_fault,
    toxiproxy_toxics,
)
from tcu_sim.fleet import FleetConfigError, OutageDistribution, ScenarioAction, ScenarioStep
from tcu_sim.protocol import CommandState, ErrorCode, RefusalReason, RejectReason, decode_json
from tcu_sim.scenario import ExpectationResult, ExpectKind, ScenarioReport, parse_expectation, parse_scenario

FLEET = """
name: spec-test
seed: 3
defaults:
  home_area: {center: {lat: 41.39, lon: 2.17}, radius_km: 1}
groups:
  - {name: leon, count: 2, model: leon, equipment: media_system}
users:
  - {email: owner@tcu-sim.test, password: owner-pass-1, spin: "2580", vehicles: [leon]}
"""


# --- fault specs -------------------------------------------------------------------------------------------
def test_every_fault_kind_parses_from_its_control_params() -> None:
    examples: dict[FaultKind, dict[str, Any]] = {
        FaultKind.OFFLINE: {"duration_s": 30},
        FaultKind.ONLINE: {},
        FaultKind.FLAKY: {"drop_rate": 0.2, "outage_s": "20s", "distribution": "uniform"},
        FaultKind.WEAK_SIGNAL: {"signal_pct": 9},
        FaultKind.CLOCK_SKEW: {"skew_s": -600},
        FaultKind.RESTART: {"duration_s": 5},
        FaultKind.LATENCY: {"latency_ms": 300, "jitter_ms": 50, "scope": "group"},
        FaultKind.BANDWIDTH: {"rate_kb_s": 2},
        FaultKind.BLACK_HOLE: {"close_after_ms": 1000},
        FaultKind.RESET: {"after_ms": 0},
        FaultKind.SLICER: {"average_size": 4, "size_variation": 2, "delay_us": 10},
        FaultKind.DATA_LIMIT: {"bytes": 4096, "direction": "upstream"},
        FaultKind.CLEAR: {"what": "transport"},
    }
    assert set(examples) == set(FaultKind)
    for kind, params in examples.items():
        fault = parse_fault({"kind": kind.value, **params})
        assert fault.kind is kind
        # What the operator publishes is what the car parses back.
        message = decode_json(fault_payload(fault))
        assert message["action"] == "fault"
        assert parse_fault(message["params"]) == fault
        assert describe_fault(fault).startswith(kind.value)


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({}, "kind: missing"),
        ({"kind": "meteor"}, "kind"),
        ({"kind": "offline", "duration_s": -1}, "duration_s"),
        ({"kind": "offline", "for": 30}, "for: unknown parameter"),
        ({"kind": "flaky", "drop_rate": 1.5}, "drop_rate"),
        ({"kind": "latency"}, "latency_ms"),
        ({"kind": "clock_skew", "skew_s": float("nan")}, "skew_s"),
        ({"kind": "data_limit", "bytes": 0}, "bytes"),
        ({"kind": "latency", "latency_ms": 1, "direction": "sideways"}, "direction"),
    ],
)
def test_bad_fault_params_are_refused_naming_the_field(params: dict[str, object], problem: str) -> None:
    with pytest.raises(FaultSpecError, match=problem):
        parse_fault(params)


def test_fault_params_must_be_an_object() -> None:
    with pytest.raises(FaultSpecError, match="object"):
        parse_fault(["offline"])  # type: ignore[arg-type]  # untrusted JSON can be anything


def test_timeline_steps_map_to_faults() -> None:
    offline = ScenarioStep(at=5, do=ScenarioAction.GO_OFFLINE, cars=("leon",), duration=30, params={"hard": False})
    assert fault_for_step(offline) == OfflineFault(duration_s=30, hard=False)
    latency = ScenarioStep(at=0, do=ScenarioAction.LATENCY, cars=("all",), params={"latency_ms": 100})
    assert fault_for_step(latency) == LatencyFault(latency_ms=100)
    generic = ScenarioStep(at=0, do=ScenarioAction.FAULT, cars=("all",), params={"kind": "clock_skew", "skew_s": 9})
    assert fault_for_step(generic) == ClockSkewFault(skew_s=9)
    assert fault_for_step(ScenarioStep(at=0, do=ScenarioAction.OPEN_DOOR, cars=("all",))) is None


def test_transport_faults_describe_direction_and_scope() -> None:
    fault = BlackHoleFault(direction=Direction.UPSTREAM, duration_s=60)
    assert describe_fault(fault) == "black_hole upstream for 1m"
    assert "(group)" in describe_fault(LatencyFault(latency_ms=5, scope=Scope.GROUP))


# --- random outages ----------------------------------------------------------------------------------------
def test_drop_rate_is_the_chance_of_a_drop_within_a_minute() -> None:
    model = OutageModel(drop_rate=0.3, outage_s=10)
    rng = random.Random(1)
    waits = [model.next_drop_in(rng) for _ in range(20_000)]
    within_a_minute = sum(1 for w in waits if w <= 60) / len(waits)
    assert within_a_minute == pytest.approx(0.3, abs=0.02)
    assert OutageModel(drop_rate=0, outage_s=10).next_drop_in(rng) == math.inf


@pytest.mark.parametrize("distribution", list(OutageDistribution))
def test_outage_lengths_follow_their_distribution_around_the_mean(distribution: OutageDistribution) -> None:
    model = OutageModel(drop_rate=0.5, outage_s=20, distribution=distribution)
    rng = random.Random(2)
    lengths = [model.outage_length(rng) for _ in range(5000)]
    assert statistics.fmean(lengths) == pytest.approx(20, rel=0.06)
    assert min(lengths) > 0
    if distribution is OutageDistribution.FIXED:
        assert set(lengths) == {20}
    if distribution is OutageDistribution.UNIFORM:
        assert min(lengths) >= 10
        assert max(lengths) <= 30


def test_each_car_has_its_own_fault_stream_fixed_by_its_seed() -> None:
    a = [fault_rng(7, "VSSZZZKLZTR000001").random() for _ in range(3)]
    assert a == [fault_rng(7, "VSSZZZKLZTR000001").random() for _ in range(3)]
    assert a != [fault_rng(7, "VSSZZZKLZTR000002").random() for _ in range(3)]
    assert a != [fault_rng(8, "VSSZZZKLZTR000001").random() for _ in range(3)]


def test_outage_model_checks_its_numbers() -> None:
    with pytest.raises(ValueError, match="drop_rate"):
        OutageModel(drop_rate=2, outage_s=1)
    with pytest.raises(ValueError, match="outage_s"):
        OutageModel(drop_rate=0.1, outage_s=0)
    assert OutageModel.of(FlakyFault(drop_rate=0.2, outage_s=3)).outage_s == 3


# --- expectations ------------------------------------------------------------------------------------------
def test_expectations_parse_with_their_details() -> None:
    error = parse_expectation({"error": "SPIN_INCORRECT", "remaining_tries": 2}, ScenarioAction.APP)
    assert (error.kind, error.value, error.details) == (ExpectKind.ERROR, ErrorCode.SPIN_INCORRECT,
                                                        (("remaining_tries", 2),))
    state = parse_expectation({"state": "rejected", "reason": "expired", "within": "2m"}, ScenarioAction.APP)
    assert (state.value, state.within_s) == (CommandState.REJECTED, 120)
    rejected = parse_expectation({"rejected": "replayed"}, ScenarioAction.ATTACK, attack_on_car=True)
    assert rejected.value is RejectReason.REPLAYED
    refused = parse_expectation({"refused": "duplicate"}, ScenarioAction.ATTACK, attack_on_car=False)
    assert refused.value is RefusalReason.DUPLICATE
    delivered = parse_expectation({"delivered": True, "since": "1m30s", "cars": "leon"}, ScenarioAction.CHECK)
    assert (delivered.details, delivered.cars) == ((("since", 90.0),), ("leon",))
    assert delivered.describe() == "delivered true (since 1m30s) for leon"
    alerts = parse_expectation({"alerts": {"speed": 1, "area": 2}, "within": "3m"}, ScenarioAction.CHECK)
    assert (alerts.kind, alerts.value, alerts.within_s) == (ExpectKind.ALERTS, {"speed": 1, "area": 2}, 180)
    assert parse_expectation({"trips_min": 2}, ScenarioAction.CHECK).value == 2


@pytest.mark.parametrize(
    ("raw", "action", "problem"),
    [
        ({"state": "queued"}, ScenarioAction.APP, "not final"),
        ({"state": "succeeded"}, ScenarioAction.CHECK, "put it on an app step"),
        ({"rejected": "replayed"}, ScenarioAction.CHECK, "put it on an attack step"),
        ({"online": True, "locked": True}, ScenarioAction.CHECK, "exactly one"),
        ({"weather": "sunny"}, ScenarioAction.CHECK, "unknown expectation"),
        ({"delivered": False}, ScenarioAction.CHECK, "delivered: true"),
        ({"online": "yes"}, ScenarioAction.CHECK, "true or false"),
        ({"error": "NOPE"}, ScenarioAction.APP, "not one of"),
        ({"online": True, "remaining_tries": 1}, ScenarioAction.CHECK, "only a `error`"),
        ({"online": True, "within": "soon"}, ScenarioAction.CHECK, "within"),
        ({"online": True, "cars": "Leon!"}, ScenarioAction.CHECK, "cars"),
        ({"cloud_status": {}}, ScenarioAction.CHECK, "mapping"),
        ({"alerts": {"speeding": 1}}, ScenarioAction.CHECK, "speed and/or area"),
        ({"alerts": {"speed": -1}}, ScenarioAction.CHECK, "speed and/or area"),
        ({"trips_min": "two"}, ScenarioAction.CHECK, "whole number"),
        ("online", ScenarioAction.CHECK, "mapping"),
    ],
)
def test_bad_expectations_are_refused(raw: object, action: ScenarioAction, problem: str) -> None:
    with pytest.raises(FaultSpecError, match=problem):
        parse_expectation(raw, action)


def test_rejected_and_refused_must_match_the_attack_target() -> None:
    with pytest.raises(FaultSpecError, match="refused"):
        parse_expectation({"rejected": "replayed"}, ScenarioAction.ATTACK, attack_on_car=False)
    with pytest.raises(FaultSpecError, match="rejected"):
        parse_expectation({"refused": "duplicate"}, ScenarioAction.ATTACK, attack_on_car=True)


# --- scenario files ----------------------------------------------------------------------------------------
def test_a_scenario_file_is_a_fleet_file_with_a_checked_timeline() -> None:
    scenario = parse_scenario(
        FLEET
        + """
scenario:
  - {at: 1s, do: go_offline, cars: "leon[0]", duration: 30s}
  - {at: 2s, do: app, user: owner@tcu-sim.test, cars: "leon[0]", params: {op: unlock, spin: "2580"},
     expect: [{state: timed_out}]}
  - {at: 3s, do: attack, cars: "leon[1]", params: {kind: expired}, expect: [{rejected: expired}]}
  - {at: 4s, do: check, expect: [{online: true}]}
  - {at: 5s, do: fast_forward, duration: 1m}
"""
    )
    kinds = [p.fault.kind if p.fault else None for p in scenario.plan]
    assert kinds == [FaultKind.OFFLINE, None, None, None, None]
    assert scenario.plan[1].app is not None
    assert scenario.plan[1].app.is_command
    assert scenario.plan[2].attack is not None
    assert scenario.plan[2].attack.kind is AttackKind.EXPIRED
    assert scenario.expectation_count == 3
    assert scenario.needs_cloud
    assert scenario.plan[1].headline() == "t=2s step 1 (app): app unlock on leon[0]"


def test_scenario_errors_name_the_file_line_and_path() -> None:
    text = FLEET + """
scenario:
  - at: 1s
    do: latency
    cars: leon
    params: {latency_ms: -5}
  - at: 2s
    do: check
    expect:
      - {state: succeeded}
  - at: 3s
    do: attack
    cars: leon
    params: {kind: teleport}
"""
    with pytest.raises(FleetConfigError) as info:
        parse_scenario(text, source="bad.yaml")
    message = str(info.value)
    assert "bad.yaml: 3 problems" in message
    assert "bad.yaml:15:13: scenario[0].params: latency_ms" in message
    assert "scenario[1].expect[0]: state: judges an app request" in message
    assert "scenario[2].params.kind: one of" in message


@pytest.mark.parametrize(
    ("step", "problem"),
    [
        ("{at: 1s, do: app, cars: leon, params: {op: unlock}}", r"scenario\[0\]\.user"),
        ("{at: 1s, do: app, user: nobody@tcu-sim.test, cars: leon, params: {op: unlock}}", "no user"),
        ("{at: 1s, do: check, expect: []}", "needs at least one expectation"),
        ("{at: 1s, do: fast_forward}", "duration"),
        ("{at: 1s, do: broker_kill, cars: leon}", "acts on the broker"),
        ("{at: 1s, do: app, user: owner@tcu-sim.test, cars: leon, params: {spin: 1234}}", "op"),
        ("{at: 1s, do: app, user: owner@tcu-sim.test, cars: leon, params: {op: unlock, spin: 2580}}", "quoted"),
        ("{at: 1s, do: attack, cars: leon, params: {kind: replay, colour: red}}", "unknown key"),
    ],
)
def test_bad_steps_are_refused(step: str, problem: str) -> None:
    with pytest.raises(FleetConfigError, match=problem):
        parse_scenario(FLEET + f"scenario:\n  - {step}\n")


def test_fleet_files_without_the_new_fields_still_load() -> None:
    config = fleet(FLEET + "scenario:\n  - {at: 1s, do: go_offline, cars: leon, duration: 10s}\n")
    assert config.scenario[0].expect == ()
    assert config.scenario[0].name is None


# --- Toxiproxy mapping -------------------------------------------------------------------------------------
def test_toxics_map_to_toxiproxy_toxics_one_per_direction() -> None:
    assert toxiproxy_toxics(LatencyFault(latency_ms=300.2, jitter_ms=50)) == [
        {"name": "tcu-sim-latency-upstream", "type": "latency", "stream": "upstream", "toxicity": 1.0,
         "attributes": {"latency": 301, "jitter": 50}},
        {"name": "tcu-sim-latency-downstream", "type": "latency", "stream": "downstream", "toxicity": 1.0,
         "attributes": {"latency": 301, "jitter": 50}},
    ]
    (hole,) = toxiproxy_toxics(BlackHoleFault(direction=Direction.DOWNSTREAM))
    assert (hole["type"], hole["attributes"]) == ("timeout", {"timeout": 0})
    (sliced,) = toxiproxy_toxics(SlicerFault(direction=Direction.UPSTREAM, delay_us=7))
    assert sliced["attributes"] == {"average_size": 8, "size_variation": 4, "delay": 7}


# --- reports -----------------------------------------------------------------------------------------------
def test_report_text_and_junit_say_what_held() -> None:
    report = ScenarioReport("demo", "demo.yaml", 1, real_s=1.5, clock_s=90)
    report.injections.append(Injection(12.5, "VSSZZZKLZTR000001", "offline hard", "timeline", "for 30s"))
    report.expectations += [
        ExpectationResult(0, "step 0 (a)", 1, "online true", True, "holds for every car", 0.5, 0.25),
        ExpectationResult(1, "step 1 (b)", 2, "state timed_out", False, "cmd-1 is succeeded <&>", 3, 0.75),
    ]
    assert not report.passed
    text = report.text()
    assert "FAILED" in text
    assert "1/2 expectations held" in text
    assert "12s500ms  VSSZZZKLZTR000001  offline hard (for 30s)  [timeline]" in text
    assert "[FAIL] t=2s step 1 (b): state timed_out -- cmd-1 is succeeded <&>" in text
    root = ET.fromstring(report.junit_xml())  # noqa: S314 - our own output, not untrusted XML
    suite = root.find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("2", "1", "0")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["step 0 (a): online true", "step 1 (b): state timed_out"]
    assert [c.get("time") for c in cases] == ["0.250", "0.750"]  # real seconds, as the suite's own time
    failure = cases[1].find("failure")
    assert failure is not None
    assert failure.get("message") == "cmd-1 is succeeded <&>"
    report.error = "RuntimeError: broker gone"
    errored = ET.fromstring(report.junit_xml()).find("testsuite")  # noqa: S314 - our own output
    assert errored is not None
    assert errored.get("errors") == "1"
