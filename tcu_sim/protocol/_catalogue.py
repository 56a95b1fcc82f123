"""The model catalogue: which models exist, with which infotainment, and what each combination can do.

Pure data shared by cars and cloud (the cloud decides the enrolment method and the services a car offers from it),
so it lives with the wire contract rather than in `tcu_sim.vehicle`, which re-exports it.

Choices (the seed names only the enrolment rule R5; the rest is what those cars are like):
- Leon and Formentor come with a media system or navigation; Ateca with navigation or a plain radio; the newer
  models (Born, Tavascan, Terramar) with a media system or navigation. A radio exists only on the Ateca (it is the
  only car that enrols with a pairing code), and an Ateca always has navigation or a radio.
- Enrolment (R5): Ateca with radio → 8-digit pairing code; every other combination → Two Key Owner Verification.
- Fuel cars (Leon, Formentor, Ateca, Terramar; Terramar modelled as the 1.5 eTSI mild hybrid) have a fuel-fired
  auxiliary heater with a ventilation mode — except the radio Ateca, the base trim, which has neither.
- Born and Tavascan are electric: no fuel-fired heater (`aux_heating.start` → `unsupported_by_vehicle`), but remote
  ventilation/climatisation, which runs from the traction battery rather than the 12 V battery.
- Logging into the infotainment with a CUPRA ID ("add user", R7) needs a media system or navigation (a radio has no
  such menu).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import cache

__all__ = [
    "Capabilities",
    "EnrolmentMethod",
    "Equipment",
    "UnsupportedConfiguration",
    "VehicleModel",
    "capabilities",
    "valid_equipment",
]


class UnsupportedConfiguration(ValueError):
    """An unknown model or equipment, or a combination that is not built (e.g. a Born with a plain radio).

    A `ValueError` rather than a `ProtocolError`: it refuses a fleet file or manifest entry, not a message off the
    wire, so it has no `RefusalReason` to be counted by.
    """


class VehicleModel(StrEnum):
    """The CUPRA models the fleet is built from."""

    LEON = "leon"
    FORMENTOR = "formentor"
    ATECA = "ateca"
    BORN = "born"
    TAVASCAN = "tavascan"
    TERRAMAR = "terramar"


class Equipment(StrEnum):
    """The infotainment a car is fitted with."""

    MEDIA_SYSTEM = "media_system"
    NAVIGATION = "navigation"
    RADIO = "radio"


class EnrolmentMethod(StrEnum):
    """How a car is enrolled to its primary user (R5)."""

    TKOV = "tkov"
    PAIRING_CODE = "pairing_code"


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What one model/equipment combination can do; shared by every car of that combination.

    Energy: fuel cars have `tank_l` and `consumption_l_per_100km`; electric cars `battery_kwh` (usable) and
    `consumption_kwh_per_100km`. Either way the car reports its energy as `fuel_level_pct` (state of charge for
    an electric car) and `range_km`.
    """

    model: VehicleModel
    equipment: Equipment
    enrolment_method: EnrolmentMethod
    aux_heater: bool
    ventilation: bool
    electric: bool
    infotainment_login: bool
    tank_l: float | None
    consumption_l_per_100km: float | None
    battery_kwh: float | None
    consumption_kwh_per_100km: float | None
    service_interval_km: int  # oil service on fuel cars; the general service on electric ones (no oil)

    @property
    def has_fuel(self) -> bool:
        """True for a car that burns fuel (and reports a fuel tank)."""
        return not self.electric

    @property
    def energy_capacity(self) -> float:
        """Usable tank (litres) or battery (kWh)."""
        value = self.battery_kwh if self.electric else self.tank_l
        assert value is not None  # guaranteed by the catalogue
        return value

    @property
    def consumption_per_100km(self) -> float:
        """Litres or kWh per 100 km, average of mixed city driving."""
        value = self.consumption_kwh_per_100km if self.electric else self.consumption_l_per_100km
        assert value is not None  # guaranteed by the catalogue
        return value

    @property
    def max_range_km(self) -> float:
        """Range on a full tank or battery."""
        return self.energy_capacity / self.consumption_per_100km * 100.0

    @property
    def pct_per_km(self) -> float:
        """Percent of the tank/battery one kilometre uses."""
        return 100.0 / self.max_range_km


# model → (equipment it can have, electric, energy capacity, consumption per 100 km)
_MODELS: dict[VehicleModel, tuple[frozenset[Equipment], bool, float, float]] = {
    VehicleModel.LEON: (frozenset({Equipment.MEDIA_SYSTEM, Equipment.NAVIGATION}), False, 50.0, 5.8),
    VehicleModel.FORMENTOR: (frozenset({Equipment.MEDIA_SYSTEM, Equipment.NAVIGATION}), False, 50.0, 6.4),
    VehicleModel.ATECA: (frozenset({Equipment.NAVIGATION, Equipment.RADIO}), False, 50.0, 6.7),
    VehicleModel.BORN: (frozenset({Equipment.MEDIA_SYSTEM, Equipment.NAVIGATION}), True, 58.0, 15.8),
    VehicleModel.TAVASCAN: (frozenset({Equipment.MEDIA_SYSTEM, Equipment.NAVIGATION}), True, 77.0, 17.8),
    VehicleModel.TERRAMAR: (frozenset({Equipment.MEDIA_SYSTEM, Equipment.NAVIGATION}), False, 55.0, 6.5),
}


def valid_equipment(model: VehicleModel | str) -> frozenset[Equipment]:
    """The equipment `model` can be ordered with."""
    return _MODELS[_model(model)][0]


@cache  # one shared instance per combination: 10,000 cars hold 10,000 references, not copies
def _capabilities(model: VehicleModel, equipment: Equipment) -> Capabilities:
    kits, electric, capacity, consumption = _MODELS[model]
    if equipment not in kits:
        raise UnsupportedConfiguration(
            f"a {model.value} is built with {' or '.join(sorted(k.value for k in kits))}, not {equipment.value}"
        )
    radio = equipment is Equipment.RADIO
    return Capabilities(
        model=model,
        equipment=equipment,
        enrolment_method=EnrolmentMethod.PAIRING_CODE if radio else EnrolmentMethod.TKOV,
        aux_heater=not electric and not radio,
        ventilation=not radio,
        electric=electric,
        infotainment_login=not radio,
        tank_l=None if electric else capacity,
        consumption_l_per_100km=None if electric else consumption,
        battery_kwh=capacity if electric else None,
        consumption_kwh_per_100km=consumption if electric else None,
        service_interval_km=30_000 if electric else 15_000,
    )


def capabilities(model: VehicleModel | str, equipment: Equipment | str) -> Capabilities:
    """What a `model` with `equipment` can do.

    Raises `UnsupportedConfiguration` (a `ValueError`) for an unknown model or equipment or a combination that
    is not built, e.g. a Born with a radio.
    """
    return _capabilities(_model(model), _equipment(equipment))


def _model(value: VehicleModel | str) -> VehicleModel:
    try:
        return VehicleModel(value)
    except ValueError:
        choices = ", ".join(m.value for m in VehicleModel)
        raise UnsupportedConfiguration(f"unknown model {str(value)[:40]!r} (models: {choices})") from None


def _equipment(value: Equipment | str) -> Equipment:
    try:
        return Equipment(value)
    except ValueError:
        choices = ", ".join(e.value for e in Equipment)
        raise UnsupportedConfiguration(f"unknown equipment {str(value)[:40]!r} (equipment: {choices})") from None
