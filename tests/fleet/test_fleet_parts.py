"""Small parts of the fleet format: durations, selectors, zones, connectivity defaults."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.cloud import spin_policy_problem
from tcu_sim.fleet import (
    Connectivity,
    ConnectivityProfile,
    ScenarioAction,
    Zone,
    format_duration,
    parse_duration,
    parse_selector,
)
from tcu_sim.fleet._config import _is_trivial_spin
from tcu_sim.fleet._geo import distance_m, random_point_in_disc
from tcu_sim.protocol import ControlAction


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("300ms", 0.3),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("2d", 172_800.0),
        ("1h30m", 5400.0),
        ("1m 30s", 90.0),
        ("1.5s", 1.5),
        (" 10s ", 10.0),
        (45, 45.0),
        (0.25, 0.25),
        ("0s", 0.0),
    ],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "5", "5 min", "s", "-5s", "1y", "5S", True, None, [1], float("inf"), -1])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


@given(st.integers(min_value=0, max_value=10**9))
def test_format_duration_round_trips(millis: int) -> None:
    seconds = millis / 1000
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


def test_format_duration() -> None:
    assert format_duration(90) == "1m30s"
    assert format_duration(0.3) == "300ms"
    assert format_duration(0) == "0s"


def test_selectors() -> None:
    assert parse_selector("all").everything
    assert parse_selector("VSSZZZKLZRR000001").vin == "VSSZZZKLZRR000001"
    leon = parse_selector("leon")
    assert (leon.group, leon.start, leon.stop) == ("leon", None, None)
    assert list(leon.indices(3)) == [0, 1, 2]
    assert list(parse_selector("leon[2]").indices(10)) == [2]
    assert list(parse_selector("leon[2:4]").indices(10)) == [2, 3]
    assert list(parse_selector("leon[:2]").indices(10)) == [0, 1]
    assert list(parse_selector("leon[8:]").indices(10)) == [8, 9]


@pytest.mark.parametrize("bad", ["", "Leon", "leon[]", "leon[3:1]", "leon[2:2]", "leon[-1]", "le on", "VSSZZZ"])
def test_bad_selectors(bad: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(bad)) if bad else "selector"):
        parse_selector(bad)


def test_circle_zone() -> None:
    zone = Zone.model_validate(
        {
            "name": "p",
            "kind": "underground_parking",
            "circle": {"center": {"lat": 41.0, "lon": 2.0}, "radius_m": 100},
        }
    )
    assert zone.contains(41.0, 2.0)
    assert zone.contains(41.0008, 2.0)  # ~89 m north
    assert not zone.contains(41.0010, 2.0)  # ~111 m north


def test_polygon_zone() -> None:
    zone = Zone.model_validate({"name": "t", "kind": "tunnel", "polygon": [[0, 0], [0, 1], [1, 1], [1, 0]]})
    assert zone.contains(0.5, 0.5)
    assert zone.contains(0.0, 0.5)  # on an edge
    assert not zone.contains(1.5, 0.5)
    assert not zone.contains(0.5, -0.1)


@given(st.integers(0, 2**32), st.floats(0, 20_000))
def test_random_points_stay_in_their_disc(seed: int, radius_m: float) -> None:
    lat, lon = random_point_in_disc(random.Random(seed), 41.39, 2.17, radius_m)
    assert distance_m(lat, lon, 41.39, 2.17) <= radius_m + 0.2  # rounding to 1e-6 degree


def test_connectivity_defaults() -> None:
    assert Connectivity().resolved() == Connectivity(profile=ConnectivityProfile.GOOD, signal_pct=85)
    flaky = Connectivity(profile=ConnectivityProfile.FLAKY, outage_s=5).resolved()
    assert (flaky.signal_pct, flaky.drop_rate, flaky.outage_s) == (60, 0.1, 5.0)
    offline = Connectivity(profile=ConnectivityProfile.OFFLINE).resolved()
    assert (offline.signal_pct, offline.outage_s) == (0, None)


def test_scenario_actions_cover_simulator_control() -> None:
    assert {a.value for a in ControlAction} <= {a.value for a in ScenarioAction}
    assert not ScenarioAction.BROKER_RESTART.targets_cars
    assert ScenarioAction.GO_OFFLINE.targets_cars


def test_spin_rule_matches_the_clouds() -> None:
    # A fleet file must never pre-create a user the cloud would refuse: both rules agree on every S-PIN.
    for number in range(10_000):
        spin = f"{number:04d}"
        assert _is_trivial_spin(spin) == (spin_policy_problem(spin) is not None), spin
