"""Helpers shared by the vehicle tests: building cars and capturing their whole state."""

from __future__ import annotations

import copy
import random
from typing import Any

from tcu_sim.protocol import Position, generate_vin
from tcu_sim.vehicle import Vehicle

HOME = Position(lat=41.3874, lon=2.1686)  # Barcelona, Plaça de Catalunya
T0 = 1_750_000_000.0


def make_car(
    model: str = "leon",
    equipment: str = "media_system",
    *,
    seed: int = 7,
    now: float = T0,
    battery_12v_v: float | None = 12.6,
    fuel_level_pct: float | None = 60.0,
    odometer_km: float | None = 10_000.0,
) -> Vehicle:
    """A parked, locked car with known battery, fuel and odometer (pass None to keep the drawn value)."""
    rng = random.Random(seed)
    return Vehicle.new(
        generate_vin(rng),
        model,
        equipment,
        HOME,
        rng,
        now,
        battery_12v_v=battery_12v_v,
        fuel_level_pct=fuel_level_pct,
        odometer_km=odometer_km,
    )


def state_of(vehicle: Vehicle) -> dict[str, Any]:
    """Every slot of the vehicle, deep-copied: equal dicts mean nothing changed."""
    return {name: copy.deepcopy(getattr(vehicle, name)) for name in Vehicle.__slots__}


def unlocked(vehicle: Vehicle, now: float = T0) -> Vehicle:
    """The car, unlocked with the key."""
    vehicle.control("unlock_key", {}, now)
    return vehicle
