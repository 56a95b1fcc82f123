"""The fleet files shipped in fleet_configs/ load, and the published JSON Schema is the generated one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tcu_sim.fleet import (
    ConnectivityProfile,
    UserRole,
    ZoneKind,
    expand_fleet,
    fleet_schema,
    fleet_schema_json,
    load_fleet,
    select_cars,
)
from tcu_sim.vehicle import Equipment, VehicleModel

CONFIGS = Path(__file__).resolve().parents[2] / "fleet_configs"


def test_demo_fleet() -> None:
    config = load_fleet(CONFIGS / "demo.yaml")
    cars = expand_fleet(config)
    assert len(cars) == 20
    assert {c.model for c in cars} == set(VehicleModel)
    atecas = {c.equipment for c in cars if c.model is VehicleModel.ATECA}
    assert atecas == {Equipment.RADIO, Equipment.NAVIGATION}
    assert any(z.kind is ZoneKind.TUNNEL for z in config.zones)
    demo = next(u for u in config.users if u.email == "demo@tcu-sim.test")
    assert demo.role is UserRole.PRIMARY
    owned = select_cars(cars, demo.vehicles)
    assert 0 < len(owned) < len(cars)
    assert demo.password.get_secret_value()
    assert demo.spin.get_secret_value()
    for car in cars:  # all around Barcelona
        assert 41.3 < car.home.lat < 41.5
        assert 2.0 < car.home.lon < 2.3


def test_city_1k_fleet() -> None:
    config = load_fleet(CONFIGS / "city-1k.yaml")
    cars = expand_fleet(config)
    assert len(cars) == 1000
    assert len({c.vin for c in cars}) == 1000
    assert len(config.groups) >= 5
    assert len(config.zones) >= 3
    assert {c.connectivity.profile for c in cars} >= {ConnectivityProfile.GOOD, ConnectivityProfile.FLAKY}
    assert sum(config.zone_at(c.home.lat, c.home.lon) is not None for c in cars) > 0  # some park without signal


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_fleet_file_loads(path: Path) -> None:
    assert expand_fleet(load_fleet(path))


def test_published_schema_is_up_to_date() -> None:
    committed = (CONFIGS / "fleet.schema.json").read_text(encoding="utf-8")
    assert committed == fleet_schema_json(), (
        "fleet_configs/fleet.schema.json is stale: run `tcu-sim fleet schema -o fleet_configs/fleet.schema.json`"
    )


def test_schema_describes_the_format() -> None:
    schema = fleet_schema()
    assert schema["$schema"].endswith("2020-12/schema")
    assert set(schema["required"]) == {"name", "seed", "groups"}
    assert schema["additionalProperties"] is False
    group = schema["$defs"]["GroupConfig"]
    assert group["additionalProperties"] is False
    assert set(group["required"]) == {"name", "count", "model", "equipment"}
    json.dumps(schema)  # plain JSON, nothing Python-only
