"""Seeded expansion, car selection and shards."""

from __future__ import annotations

import functools
import random
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tcu_sim.fleet import (
    REFERENCE_DATE,
    CarSpec,
    ConnectivityProfile,
    FleetConfig,
    FleetError,
    Shard,
    ShardError,
    expand_fleet,
    parse_fleet,
    parse_shard,
    select_cars,
    select_shard,
)
from tcu_sim.fleet._geo import distance_m
from tcu_sim.protocol import has_valid_check_digit, validate_vin

FLEET = """\
name: t
seed: {seed}
defaults:
  home_area: {{center: {{lat: 41.39, lon: 2.17}}, radius_km: 3}}
groups:
  - {{name: leon, count: {leon}, model: leon, equipment: media_system}}
  - name: ateca
    count: 40
    model: ateca
    equipment: radio
    home_area: {{center: {{lat: 41.44, lon: 2.18}}, radius_km: 0.5}}
    connectivity: {{profile: flaky}}
    registered_age_days: {{min: 10, max: 20}}
  - {{name: born, count: 25, model: born, equipment: media_system, registered_at: 2025-06-01,
     status_interval_s: 2m}}
"""


def fleet(seed: int = 1, leon: int = 35) -> FleetConfig:
    return parse_fleet(FLEET.format(seed=seed, leon=leon))


def test_same_seed_gives_the_same_fleet() -> None:
    first, second = expand_fleet(fleet(1)), expand_fleet(fleet(1))
    assert first == second
    assert [c.vin for c in first] == [c.vin for c in second]
    assert [c.rng().random() for c in first] == [c.rng().random() for c in second]


def test_another_seed_gives_another_fleet() -> None:
    first, second = expand_fleet(fleet(1)), expand_fleet(fleet(2))
    assert not {c.vin for c in first} & {c.vin for c in second}
    assert [c.home for c in first] != [c.home for c in second]
    assert [c.seed for c in first] != [c.seed for c in second]


def test_vins_are_valid_and_unique() -> None:
    cars = expand_fleet(fleet())
    assert len({c.vin for c in cars}) == len(cars) == 100
    for car in cars:
        assert validate_vin(car.vin).startswith("VSS")
        assert has_valid_check_digit(car.vin)


def test_order_and_indices_follow_the_file() -> None:
    cars = expand_fleet(fleet())
    assert [c.index for c in cars] == list(range(100))
    assert [c.group for c in cars] == ["leon"] * 35 + ["ateca"] * 40 + ["born"] * 25
    assert [c.group_index for c in cars[35:75]] == list(range(40))


def test_growing_a_group_keeps_every_other_car() -> None:
    small, big = expand_fleet(fleet(leon=35)), expand_fleet(fleet(leon=50))
    by_vin = {c.vin: c for c in big}
    for car in small:
        other = by_vin[car.vin]
        assert (other.group, other.group_index, other.home, other.seed) == (
            car.group,
            car.group_index,
            car.home,
            car.seed,
        )


def test_group_settings_and_defaults_are_applied() -> None:
    cars = expand_fleet(fleet())
    leon, ateca, born = cars[0], cars[35], cars[75]
    assert leon.status_interval_s == 60.0
    assert born.status_interval_s == 120.0
    assert leon.connectivity.profile is ConnectivityProfile.GOOD
    assert leon.connectivity.signal_pct == 85
    assert ateca.connectivity.profile is ConnectivityProfile.FLAKY
    assert ateca.connectivity.drop_rate == 0.1
    assert ateca.connectivity.outage_s == 30.0
    assert born.registered_at == date(2025, 6, 1)
    for car in cars[35:75]:
        assert 10 <= (REFERENCE_DATE - car.registered_at).days <= 20
    today = date(2026, 6, 1)
    moved = expand_fleet(fleet(), today=today)
    assert [(today - c.registered_at).days for c in moved[35:75]] == [
        (REFERENCE_DATE - c.registered_at).days for c in cars[35:75]
    ]


def test_homes_lie_in_their_area() -> None:
    cars = expand_fleet(fleet())
    for car in cars[:35]:
        assert distance_m(car.home.lat, car.home.lon, 41.39, 2.17) <= 3000 + 1
    for car in cars[35:75]:
        assert distance_m(car.home.lat, car.home.lon, 41.44, 2.18) <= 500 + 1
    # spread over the disc, not piled in the centre
    assert max(distance_m(c.home.lat, c.home.lon, 41.39, 2.17) for c in cars[:35]) > 1500


def test_select_cars() -> None:
    cars = expand_fleet(fleet())
    assert select_cars(cars, ["all"]) == cars
    assert select_cars(cars, ["born"]) == cars[75:]
    assert select_cars(cars, ["ateca[3]"]) == [cars[38]]
    assert select_cars(cars, ["ateca[:2]", "leon[34:]"]) == [cars[34], cars[35], cars[36]]
    assert select_cars(cars, [cars[7].vin, "leon[7]"]) == [cars[7]]
    with pytest.raises(FleetError, match="matches no car"):
        select_cars(cars, ["tavascan"])
    with pytest.raises(FleetError, match="not a car selector"):
        select_cars(cars, ["Leon!"])


@pytest.mark.parametrize("count", [1, 2, 3, 7, 100, 101])
def test_shards_partition_the_fleet(count: int) -> None:
    cars = expand_fleet(fleet())
    shares = [select_shard(cars, i, count) for i in range(1, count + 1)]
    vins = [c.vin for share in shares for c in share]
    assert sorted(vins) == sorted(c.vin for c in cars)  # union is everything, nothing twice
    assert len(vins) == len(set(vins))
    sizes = [len(share) for share in shares]
    assert max(sizes) - min(sizes) <= 1  # round robin: balanced to one car
    assert shares == [select_shard(expand_fleet(fleet()), i, count) for i in range(1, count + 1)]


@functools.cache
def hundred_cars() -> list[CarSpec]:
    return expand_fleet(fleet())


@given(index=st.integers(0, 99), count=st.integers(1, 150))
def test_every_car_is_in_exactly_one_shard(index: int, count: int) -> None:
    car = hundred_cars()[index]
    assert sum(Shard(i, count).contains(car) for i in range(1, count + 1)) == 1


def test_parse_shard() -> None:
    assert parse_shard("2/4") == Shard(2, 4)
    assert parse_shard(" 1 / 1 ") == Shard(1, 1)
    assert str(parse_shard("3/8")) == "3/8"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("2", "look like i/n"),
        ("a/b", "look like i/n"),
        ("-1/4", "look like i/n"),
        ("0/4", "between 1 and 4"),
        ("5/4", "between 1 and 4"),
        ("1/0", "at least 1"),
        ("", "look like i/n"),
    ],
)
def test_bad_shard_says_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(ShardError, match=problem):
        parse_shard(text)


def test_select_shard_refuses_bad_numbers() -> None:
    with pytest.raises(ShardError):
        select_shard([], 3, 2)
    with pytest.raises(ValueError, match="between"):  # ShardError is a ValueError too
        select_shard([], 0, 2)


def test_car_rng_is_independent_per_car() -> None:
    cars = expand_fleet(fleet())
    draws = {c.rng().random() for c in cars}
    assert len(draws) == len(cars)
    assert isinstance(cars[0].rng(), random.Random)
