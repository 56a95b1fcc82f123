"""From a fleet file to cars: seeded, deterministic expansion, car selection, and shards.

Expansion order is the file's group order, then index within the group; `CarSpec.index` is that position.
The same file and seed give the same VINs, home positions, registration ages, per-car seeds and order, in any
process (see `_streams` for how the random streams are derived).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from tcu_sim.fleet._config import Connectivity, FleetConfig
from tcu_sim.fleet._errors import FleetError, ShardError
from tcu_sim.fleet._geo import random_point_in_disc
from tcu_sim.fleet._selectors import parse_selector
from tcu_sim.fleet._streams import fleet_vins, stream
from tcu_sim.protocol import Position
from tcu_sim.vehicle import Equipment, VehicleModel

__all__ = ["REFERENCE_DATE", "CarSpec", "Shard", "expand_fleet", "parse_shard", "select_cars", "select_shard"]

REFERENCE_DATE = date(2026, 1, 1)
"""The day registration ages count back from when the caller gives none (the `VirtualClock` default start)."""


@dataclass(frozen=True, slots=True)
class CarSpec:
    """One car of an expanded fleet: what a TCU needs to start, and nothing that changes while it runs."""

    vin: str
    group: str
    index: int
    """Position in the whole fleet (expansion order), from 0."""
    group_index: int
    """Position in its group, from 0 (what `leon[3]` selects)."""
    model: VehicleModel
    equipment: Equipment
    home: Position
    status_interval_s: float
    connectivity: Connectivity
    """The group's profile with every default filled in."""
    registered_at: date
    seed: int
    """Seed for the car's own `random.Random` (its events, its jitter): use `car.rng()`."""

    def rng(self) -> random.Random:
        """A fresh `random.Random` for this car, the same on every run."""
        return random.Random(self.seed)


def expand_fleet(config: FleetConfig, *, today: date | None = None) -> list[CarSpec]:
    """Every car of the fleet, in order. `today` anchors `registered_age_days` (default `REFERENCE_DATE`)."""
    anchor = REFERENCE_DATE if today is None else today
    cars: list[CarSpec] = []
    all_vins = fleet_vins(config.seed, ((g.name, g.count) for g in config.groups))
    for group, vins in zip(config.groups, all_vins, strict=True):
        area = group.home_area or config.defaults.home_area
        assert area is not None  # FleetConfig refuses a group with no home area anywhere
        interval = group.status_interval_s or config.defaults.status_interval_s
        connectivity = (group.connectivity or config.defaults.connectivity).resolved()
        ages = group.registered_age_days or config.defaults.registered_age_days
        home_rng = stream(config.seed, "home", group.name)
        age_rng = stream(config.seed, "registration", group.name)
        seed_rng = stream(config.seed, "car", group.name)
        for i, vin in enumerate(vins):
            lat, lon = random_point_in_disc(home_rng, area.center.lat, area.center.lon, area.radius_km * 1000)
            # Drawn even for a fixed date, so that switching between the two keeps later draws aligned.
            age_days = age_rng.randint(ages.min, ages.max)
            registered = group.registered_at or anchor - timedelta(days=age_days)
            cars.append(
                CarSpec(
                    vin=vin,
                    group=group.name,
                    index=len(cars),
                    group_index=i,
                    model=group.model,
                    equipment=group.equipment,
                    home=Position(lat=lat, lon=lon),
                    status_interval_s=interval,
                    connectivity=connectivity,
                    registered_at=registered,
                    seed=seed_rng.getrandbits(63),
                )
            )
    return cars


def select_cars(cars: Sequence[CarSpec], selectors: Iterable[str]) -> list[CarSpec]:
    """The cars matching any of the selectors (`all`, `leon`, `leon[3]`, `leon[0:5]`, a VIN), in fleet order.

    Raises FleetError for a malformed selector, an unknown group or VIN, or a selector that picks no car.
    """
    chosen: set[int] = set()
    for text in selectors:
        try:
            selector = parse_selector(text)
        except ValueError as exc:
            raise FleetError(str(exc)) from None
        if selector.everything:
            matched = list(range(len(cars)))
        elif selector.vin is not None:
            matched = [i for i, car in enumerate(cars) if car.vin == selector.vin]
        else:
            wanted = selector.indices(1 << 62)
            matched = [i for i, car in enumerate(cars) if car.group == selector.group and car.group_index in wanted]
        if not matched:
            raise FleetError(f"selector {text!r} matches no car")
        chosen.update(matched)
    return [cars[i] for i in sorted(chosen)]


@dataclass(frozen=True, slots=True)
class Shard:
    """Share `index` of `count` (1-based, as in `--shard 2/4`): cars with `index % count == index - 1`.

    Round-robin by fleet index: shares differ by at most one car, every share mixes all groups, and the split
    is the same in every process that expands the same file.
    """

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ShardError(f"shard count must be at least 1, got {self.count}")
        if not 1 <= self.index <= self.count:
            raise ShardError(f"shard index must be between 1 and {self.count}, got {self.index}")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def contains(self, car: CarSpec) -> bool:
        """Whether `car` belongs to this share."""
        return car.index % self.count == self.index - 1


_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(text: str) -> Shard:
    """`"2/4"` → Shard(2, 4). Raises ShardError naming the problem."""
    match = _SHARD.match(text)
    if match is None:
        raise ShardError(f"shard must look like i/n with 1 <= i <= n (e.g. 2/4), got {text!r}")
    return Shard(int(match.group(1)), int(match.group(2)))


def select_shard(cars: Iterable[CarSpec], index: int, count: int) -> list[CarSpec]:
    """The cars of share `index` of `count` (1-based; see `Shard`). Shares 1..count partition the fleet."""
    shard = Shard(index, count)
    return [car for car in cars if shard.contains(car)]
