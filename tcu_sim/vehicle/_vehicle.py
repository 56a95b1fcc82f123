"""One simulated car: its state, and how it reacts to remote commands, to people at the car, and to time.

Everything here is a pure function of the state and the arguments: time arrives as `now` (seconds), randomness
only at creation from a passed-in `random.Random`. No I/O, no asyncio.

Time. The car remembers the last time it saw (`now` of the latest call) and, on every call, first lets time run
up to the new `now`: heater/ventilation timers, 12 V battery draw and recovery, trip progress. What happens on
the way (heater finished, parked, battery low) becomes events stamped with the exact moment it happened; they
are returned by that call (first in the list) — or, when the call raises, by the next one. Time never runs
backwards: an earlier `now` counts as no time passed.

Physics (kept simple but plausible):
- 12 V battery: the fuel-fired heater draws 0.012 V/min and ventilation 0.008 V/min (on an electric car
  ventilation runs from the traction battery at 2 kW instead); with the ignition on it charges at 0.05 V/min up to
  12.7 V; parked with nothing running it recovers at 0.001 V/min up to 12.4 V (surface charge). Below 11.8 V the
  car reports `battery_low` once, stops the heater/ventilation and refuses to start them until the battery is
  back above 11.9 V (hysteresis, so a recovering battery does not flap).
- Trips: straight along the great circle at the car's own average city speed (40-50 km/h, drawn at creation),
  burning fuel (or charge) at the catalogue consumption; the odometer grows by the distance driven. A car whose
  tank or battery runs empty stops where it is and parks there.
- Heater/ventilation stop by themselves after their duration, when the ignition goes on, or on a low battery.
- A trip (one or more `drive_to` legs until the car parks) is logged: speed and position every `TRIP_SAMPLE_S`
  seconds and at every change of speed (thinned to at most `MAX_TRIP_SAMPLES`); when it ends, a `trip` event
  carries its summary (start and end, distance, duration, average and top speed, fuel or energy used) and the
  samples, for driving data and the cloud's speed and area alerts.
- A health warning that appears (12 V battery low, fuel low, service or inspection overdue, ...) is reported
  once as a `health_warning` event; it is reported again only after it went away and came back.

Privacy. `no_position` hides the parking position (snapshot, event and trip positions); `max` refuses every remote
command with `privacy_mode`, `sends_status()` turns False, and the events the car returns are only the ones the
law allows (`ecall`) plus `privacy_changed` (so the cloud learns why the car went silent).

Locking is central: every door, the trunk and the hood lock together, and the car cannot be locked (by key or
remotely) while any of them is open; a locked door cannot be opened from outside. So "locked" always implies
"every door closed".

Memory: 10,000 of these live in one process, so the live state is plain slotted attributes (no pydantic);
pydantic models are built only for snapshots and events.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from pydantic import BaseModel, SecretStr

from tcu_sim.protocol import (
    COMMAND_PARAMS,
    MAX_TRIP_SAMPLES,
    TRIP_SAMPLE_S,
    AuxHeating,
    AuxHeatingParams,
    AuxState,
    Capabilities,
    CommandOp,
    ConnectionInfo,
    ControlAction,
    DoorName,
    Doors,
    DoorState,
    EnrolmentMethod,
    Equipment,
    Event,
    EventType,
    FailureReason,
    Health,
    NotifyParams,
    OnOff,
    ParkingPosition,
    Position,
    PrivacyMode,
    ProtocolError,
    StatusSnapshot,
    Trip,
    TripSample,
    VehicleModel,
    VentilationParams,
    WindowName,
    Windows,
    WindowState,
    capabilities,
    command_params,
    is_valid_vin,
)

from ._errors import ControlRefused, InvalidCommand, InvalidControl, VehicleError
from ._geo import distance_km, intermediate_point
from ._params import ControlParams, Param

__all__ = [
    "BATTERY_LOW_V",
    "CONTROL_PARAMS",
    "IDLE_TICK_S",
    "MAX_NOTIFICATIONS",
    "Outcome",
    "Vehicle",
    "check_control",
]

BATTERY_LOW_V: Final = 11.8  # below this the car refuses heater/ventilation and reports battery_low
_BATTERY_REARM_V: Final = 11.9  # hysteresis: battery_low is reported again only after recovering above this
_CHARGE_MAX_V: Final = 12.7
_RECOVER_MAX_V: Final = 12.4
_CHARGE_V_PER_S: Final = 0.05 / 60
_RECOVER_V_PER_S: Final = 0.001 / 60
_HEATER_V_PER_S: Final = 0.012 / 60
_VENTILATION_V_PER_S: Final = 0.008 / 60
_EV_VENTILATION_KW: Final = 2.0
_EV_VENTILATION_MIN_PCT: Final = 5.0  # an electric car keeps its last 5 % of charge for driving
_LOW_ENERGY_PCT: Final = 10.0  # health warning fuel_low / charge_low
_MIN_RANGE_TO_DRIVE_KM: Final = 0.1
IDLE_TICK_S: Final = 3600.0  # `next_tick_s` when nothing is running
MAX_NOTIFICATIONS: Final = 20  # the infotainment keeps the latest messages only
_MAX_CATCH_UP_STEPS: Final = 1000  # each step consumes a breakpoint; a handful per call in practice

# Tolerances for "this breakpoint is reached" after floating-point stepping.
_EPS_S: Final = 1e-6
_EPS_KM: Final = 1e-6
_EPS_V: Final = 1e-9
_EPS_PCT: Final = 1e-9

_DOORS: Final = tuple(DoorName)
_WINDOWS: Final = tuple(WindowName)
_DOOR_BIT: Final = {door: 1 << i for i, door in enumerate(_DOORS)}
_WINDOW_BIT: Final = {window: 1 << i for i, window in enumerate(_WINDOWS)}

# What the car still sends in maximum privacy.
_EVENTS_IN_MAX_PRIVACY: Final = frozenset({EventType.ECALL, EventType.PRIVACY_CHANGED})

_RANDOM_WARNINGS: Final = (
    "tyre_pressure_low",
    "washer_fluid_low",
    "brake_pad_wear",
    "light_bulb_failure",
    "adblue_low",
)
_PAIRING_CODE: Final = re.compile(r"[0-9]{8}")
_PASSWORD: Final = re.compile(r"[^\x00]{1,1024}")

# The parameters of the people-at-the-car controls, read through these declarations (`CONTROL_PARAMS`).
_DOOR: Final = Param("door", "choice", choices=DoorName)
_WINDOW: Final = Param("window", "choice", choices=WindowName)
_LAT: Final = Param("lat", "number", -90.0, 90.0)
_LON: Final = Param("lon", "number", -180.0, 180.0)
_SPEED: Final = Param("speed_kmh", "number", 5.0, 250.0, optional="the car's usual speed")
_PRIVACY: Final = Param("mode", "choice", choices=PrivacyMode)
_CODE: Final = Param("code", "secret", pattern=_PAIRING_CODE, what="8 digits")
_KEYS: Final = Param("keys", "integer", 0, 2, default=2)
_EMAIL: Final = Param("email", "email")
_PASSWORD_PARAM: Final = Param("password", "secret", pattern=_PASSWORD, what="1 to 1024 characters")
_VOLTAGE: Final = Param("voltage", "number", 0.0, 16.0)

DAY_S: Final = 86_400.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a remote command did: `succeeded`, or failed with `reason` (and a human `detail`).

    `events` are what the car reports: events of time that passed before the command (first), then those the
    command produced. A failed command produces none and changes nothing.
    """

    succeeded: bool
    reason: FailureReason | None = None
    detail: str | None = None
    events: tuple[Event, ...] = ()


@dataclass(slots=True)
class _TripLog:
    """What a whole trip (every leg until the car parks) has been so far: where and when it started, what it
    had in the tank, its top speed, and its samples `(at, speed_kmh, lat, lon)`."""

    started_at: float
    start_lat: float
    start_lon: float
    start_odometer_km: float
    start_fuel_pct: float
    max_speed_kmh: float = 0.0
    sample_every_s: float = TRIP_SAMPLE_S
    next_sample_at: float = 0.0
    samples: list[tuple[float, float, float, float]] | None = None

    def sample(self, at: float, speed_kmh: float, lat: float, lon: float) -> None:
        """Keep one sample; a full log keeps every second sample and samples half as often from then on."""
        samples = self.samples if self.samples is not None else []
        self.samples = samples
        if len(samples) >= MAX_TRIP_SAMPLES - 1:  # room for the arrival
            del samples[1::2]
            self.sample_every_s *= 2
        samples.append((at, speed_kmh, lat, lon))
        self.next_sample_at = at + self.sample_every_s


@dataclass(slots=True)
class _Trip:
    """A drive under way, along the great circle from start to destination."""

    start_lat: float
    start_lon: float
    dest_lat: float
    dest_lon: float
    distance_km: float
    speed_kmh: float
    relock: bool  # the driver found the car locked and locks it again on arrival
    log: _TripLog
    done_km: float = 0.0


class Vehicle:
    """The state of one car and its pure decisions (see the module docstring for the rules it follows).

    Public read-only views: `vin`, `capabilities`, `revision`, `locked`, `ignition_on`, `moving`, `lights_on`,
    `position`, `parked_at`, `battery_12v_v`, `fuel_level_pct`, `range_km`, `odometer_km`, `average_speed_kmh`,
    `privacy_mode`, `aux_state`, `notifications`, `infotainment_user`, `open_doors`, `open_windows`.
    `signal_pct` is a plain attribute the TCU/fault layer may set (it does not bump the revision).
    """

    __slots__ = (
        "_aux",
        "_aux_target",
        "_aux_until",
        "_battery_low",
        "_battery_v",
        "_doors_open",
        "_fuel_pct",
        "_ignition",
        "_infotainment_user",
        "_inspection_due_at",
        "_lat",
        "_lights",
        "_locked",
        "_lon",
        "_notifications",
        "_odometer_km",
        "_parked_at",
        "_pending",
        "_privacy",
        "_reported_warnings",
        "_revision",
        "_service_due_at_km",
        "_speed_kmh",
        "_t",
        "_trip",
        "_warnings",
        "_windows_open",
        "capabilities",
        "signal_pct",
        "vin",
    )

    def __init__(
        self,
        vin: str,
        caps: Capabilities,
        *,
        lat: float,
        lon: float,
        parked_at: float,
        now: float,
        battery_12v_v: float,
        fuel_level_pct: float,
        odometer_km: float,
        inspection_due_at: float,
        service_due_at_km: float,
        warnings: tuple[str, ...],
        speed_kmh: float,
        signal_pct: int,
    ) -> None:
        """A parked, locked car with everything closed and off. Prefer `Vehicle.new`."""
        self.vin = vin
        self.capabilities = caps
        self.signal_pct = signal_pct
        self._revision = 0
        self._t = float(now)
        self._pending: list[Event] | None = None  # None rather than [] saves memory on 10,000 idle cars
        self._doors_open = 0
        self._windows_open = 0
        self._locked = True
        self._lights = False
        self._ignition = False
        self._lat = lat
        self._lon = lon
        self._parked_at: float | None = parked_at
        self._trip: _Trip | None = None
        self._battery_v = battery_12v_v
        self._battery_low = battery_12v_v < BATTERY_LOW_V
        self._fuel_pct = fuel_level_pct
        self._odometer_km = odometer_km
        self._warnings = warnings
        self._inspection_due_at = inspection_due_at
        self._service_due_at_km = service_due_at_km
        self._privacy = PrivacyMode.OFF
        self._aux = AuxState.OFF
        self._aux_until = 0.0
        self._aux_target: float | None = None
        self._notifications: tuple[str, ...] = ()
        self._infotainment_user: str | None = None
        self._speed_kmh = speed_kmh
        self._reported_warnings = tuple(self._health_warnings(self._t))  # known from the start: not news

    @classmethod
    def new(
        cls,
        vin: str,
        model: VehicleModel | str,
        equipment: Equipment | str,
        home: Position | tuple[float, float],
        rng: random.Random,
        now: float,
        *,
        battery_12v_v: float | None = None,
        fuel_level_pct: float | None = None,
        odometer_km: float | None = None,
    ) -> Vehicle:
        """A car parked (locked) at `home` some time in the last 12 hours, with seeded random wear and fill.

        Always draws the same numbers from `rng` in the same order, so one seed gives one car; the keyword
        arguments override the drawn values (the draws still happen). Raises `UnsupportedConfiguration` for a
        combination that is not built and `VehicleError` for a malformed VIN or position.
        """
        caps = capabilities(model, equipment)
        now = _check_now(now)
        if not isinstance(vin, str) or not is_valid_vin(vin):
            raise VehicleError("vin: not a valid 17-character VIN")
        lat, lon = (home.lat, home.lon) if isinstance(home, Position) else home
        if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
            raise VehicleError("home: latitude must be within ±90 and longitude within ±180")
        # Draw order is part of the determinism contract: append new draws at the end only.
        drawn_battery = round(rng.uniform(12.1, 12.7), 2)
        drawn_fuel = round(rng.uniform(15.0, 95.0), 1)
        drawn_odometer = round(rng.uniform(500.0, 60_000.0), 1)
        parked_ago = rng.uniform(0.0, 12 * 3600.0)
        inspection_days = rng.randint(-20, 730)
        service_km = rng.randint(-500, caps.service_interval_km)
        warning = rng.choice(_RANDOM_WARNINGS)
        has_warning = rng.random() < 0.08
        speed = round(rng.uniform(40.0, 50.0), 1)
        signal = rng.randint(55, 100)
        if caps.electric and warning == "adblue_low":
            warning = "tyre_pressure_low"  # an electric car has no AdBlue tank
        odo = drawn_odometer if odometer_km is None else _check_range("odometer_km", odometer_km, 0, 10_000_000)
        return cls(
            vin,
            caps,
            lat=float(lat),
            lon=float(lon),
            parked_at=max(0.0, now - parked_ago),
            now=now,
            battery_12v_v=(
                drawn_battery if battery_12v_v is None else _check_range("battery_12v_v", battery_12v_v, 0, 16)
            ),
            fuel_level_pct=(
                drawn_fuel if fuel_level_pct is None else _check_range("fuel_level_pct", fuel_level_pct, 0, 100)
            ),
            odometer_km=odo,
            inspection_due_at=now + inspection_days * DAY_S,
            service_due_at_km=odo + service_km,
            warnings=(warning,) if has_warning else (),
            speed_kmh=speed,
            signal_pct=signal,
        )

    # ------------------------------------------------------------------------------------------ read-only views

    @property
    def model(self) -> VehicleModel:
        """The car's model."""
        return self.capabilities.model

    @property
    def equipment(self) -> Equipment:
        """The car's infotainment equipment."""
        return self.capabilities.equipment

    @property
    def revision(self) -> int:
        """Grows on every change worth a new status (discrete changes, each minute of heater countdown, each
        kilometre driven, each 0.1 V or 1 % of energy); equal revisions mean an equal status apart from time."""
        return self._revision

    @property
    def locked(self) -> bool:
        """Central locking state (every door, trunk and hood)."""
        return self._locked

    @property
    def ignition_on(self) -> bool:
        """Whether the ignition is on."""
        return self._ignition

    @property
    def moving(self) -> bool:
        """Whether a trip is under way."""
        return self._trip is not None

    @property
    def lights_on(self) -> bool:
        """Whether the lights are on."""
        return self._lights

    @property
    def position(self) -> tuple[float, float]:
        """Where the car really is (lat, lon), whatever the privacy mode says about reporting it."""
        return self._lat, self._lon

    @property
    def parked_at(self) -> float | None:
        """When the car was parked; None while moving."""
        return self._parked_at

    @property
    def battery_12v_v(self) -> float:
        """The 12 V battery voltage."""
        return self._battery_v

    @property
    def fuel_level_pct(self) -> float:
        """Fuel level, or state of charge for an electric car."""
        return self._fuel_pct

    @property
    def range_km(self) -> float:
        """Range on what is left in the tank or battery."""
        return self._fuel_pct * self.capabilities.max_range_km / 100.0

    @property
    def odometer_km(self) -> float:
        """Total distance driven."""
        return self._odometer_km

    @property
    def average_speed_kmh(self) -> float:
        """The car's own average city speed, used for trips without a given speed."""
        return self._speed_kmh

    @property
    def privacy_mode(self) -> PrivacyMode:
        """The privacy level set in the car."""
        return self._privacy

    @property
    def aux_state(self) -> AuxState:
        """What the heater/ventilation is doing."""
        return self._aux

    @property
    def notifications(self) -> tuple[str, ...]:
        """Messages shown in the infotainment, oldest first (the latest `MAX_NOTIFICATIONS`)."""
        return self._notifications

    @property
    def infotainment_user(self) -> str | None:
        """The CUPRA ID (e-mail) logged into the infotainment, if any."""
        return self._infotainment_user

    @property
    def open_doors(self) -> tuple[DoorName, ...]:
        """The doors (incl. trunk and hood) that are open."""
        return tuple(d for d in _DOORS if self._doors_open & _DOOR_BIT[d])

    @property
    def open_windows(self) -> tuple[WindowName, ...]:
        """The windows that are open."""
        return tuple(w for w in _WINDOWS if self._windows_open & _WINDOW_BIT[w])

    def sends_status(self) -> bool:
        """False in maximum privacy: the car then sends nothing but what the law requires."""
        return self._privacy is not PrivacyMode.MAX

    def sends_event(self, event_type: EventType) -> bool:
        """Whether an event of this type leaves the car in the current privacy mode."""
        return self._privacy is not PrivacyMode.MAX or event_type in _EVENTS_IN_MAX_PRIVACY

    def aux_remaining_s(self, now: float) -> float:
        """Seconds the heater/ventilation still runs, as of `now` (without letting time run)."""
        return max(0.0, self._aux_until - now) if self._aux is not AuxState.OFF else 0.0

    def __repr__(self) -> str:
        trip = self._trip
        where = f"driving {trip.done_km:.1f}/{trip.distance_km:.1f} km" if trip else "parked"
        return (
            f"<Vehicle {self.vin} {self.model.value}/{self.equipment.value} "
            f"{'locked' if self._locked else 'unlocked'} {where} aux={self._aux.value} "
            f"battery={self._battery_v:.2f}V fuel={self._fuel_pct:.1f}% privacy={self._privacy.value} "
            f"rev={self._revision}>"
        )

    # ------------------------------------------------------------------------------------------ time

    def advance(self, now: float) -> list[Event]:
        """Let time run up to `now`; the events it produced (heater finished, parked, battery low, ...)."""
        self._catch_up(now)
        return self._drain()

    def next_tick_s(self, now: float | None = None) -> float:
        """Seconds from `now` (default: the last time the car saw) until something changes on its own: the next
        heater minute or its end, the next kilometre or the arrival, the battery crossing the low mark.
        `IDLE_TICK_S` when nothing runs. Meant to be called right after `advance` (it does not let time run)."""
        t = self._t if now is None else max(float(now), self._t)
        candidates = [IDLE_TICK_S]
        if self._aux is not AuxState.OFF:
            remaining = self._aux_until - t
            to_minute = remaining % 60.0
            candidates.append(remaining if remaining <= 60.0 else (to_minute if to_minute > _EPS_S else 60.0))
        trip = self._trip
        if trip is not None:
            km_per_s = trip.speed_kmh / 3600.0
            to_km = math.floor(self._odometer_km) + 1.0 - self._odometer_km
            candidates.append(min(to_km, trip.distance_km - trip.done_km) / km_per_s)
        candidates.append(self._next_breakpoint(t) - t)
        return max(0.001, min(candidates))

    def _catch_up(self, now: float) -> None:
        """Run time from the last seen moment to `now`, splitting at every breakpoint so that the result does
        not depend on how often the car is asked."""
        now = _check_now(now)
        t = self._t
        for _ in range(_MAX_CATCH_UP_STEPS):
            self._settle(t)
            if t >= now:
                break
            end = min(now, self._next_breakpoint(t))
            self._run(t, end)
            t = end
        else:  # pragma: no cover - every step consumes a breakpoint; this only guards against a logic error
            self._run(t, now)
            t = now
        self._t = max(t, self._t)

    def _battery_rate(self) -> tuple[float, float]:
        """12 V battery change in V/s and the level it stops at when charging."""
        if self._aux is AuxState.HEATING:
            return -_HEATER_V_PER_S, 0.0
        if self._aux is AuxState.VENTILATION and not self.capabilities.electric:
            return -_VENTILATION_V_PER_S, 0.0
        if self._ignition:
            return _CHARGE_V_PER_S, _CHARGE_MAX_V
        return _RECOVER_V_PER_S, _RECOVER_MAX_V

    def _ev_ventilation_pct_per_s(self) -> float:
        caps = self.capabilities
        if self._aux is AuxState.VENTILATION and caps.electric:
            return _EV_VENTILATION_KW / 3600.0 / caps.energy_capacity * 100.0
        return 0.0

    def _next_breakpoint(self, t: float) -> float:
        """The earliest moment after `t` at which something happens by itself."""
        when = math.inf
        if self._aux is not AuxState.OFF:
            when = min(when, self._aux_until)
        rate, _ = self._battery_rate()
        if rate < 0 and not self._battery_low:
            when = min(when, t + (self._battery_v - BATTERY_LOW_V) / -rate)
        drain = self._ev_ventilation_pct_per_s()
        if drain > 0:
            when = min(when, t + self._fuel_pct / drain)
        trip = self._trip
        if trip is not None:
            km_per_s = trip.speed_kmh / 3600.0
            when = min(when, t + (trip.distance_km - trip.done_km) / km_per_s)
            when = min(when, t + self._fuel_pct / self.capabilities.pct_per_km / km_per_s)
        return max(when, t)

    def _run(self, t0: float, t1: float) -> None:
        """Move continuous quantities linearly from t0 to t1 (no breakpoint lies strictly between)."""
        dt = t1 - t0
        if dt <= 0:
            return
        before = self._coarse(t0)
        rate, ceiling = self._battery_rate()
        if rate < 0:
            self._battery_v = max(0.0, self._battery_v + rate * dt)
        elif self._battery_v < ceiling:
            self._battery_v = min(ceiling, self._battery_v + rate * dt)
        drain = self._ev_ventilation_pct_per_s()
        if drain > 0:
            self._fuel_pct = max(0.0, self._fuel_pct - drain * dt)
        trip = self._trip
        if trip is not None:
            pct_per_km = self.capabilities.pct_per_km
            km = min(trip.speed_kmh * dt / 3600.0, trip.distance_km - trip.done_km, self._fuel_pct / pct_per_km)
            self._sample_between(trip, t0, t1, km)
            trip.done_km += km
            self._odometer_km += km
            self._fuel_pct = max(0.0, self._fuel_pct - km * pct_per_km)
            fraction = trip.done_km / trip.distance_km if trip.distance_km > 0 else 1.0
            self._lat, self._lon = intermediate_point(
                trip.start_lat, trip.start_lon, trip.dest_lat, trip.dest_lon, fraction
            )
        if self._coarse(t1) != before:
            self._revision += 1

    def _sample_between(self, trip: _Trip, t0: float, t1: float, km: float) -> None:
        """The trip log's samples due in (t0, t1], on the straight stretch driven between them."""
        log = trip.log
        while t0 < log.next_sample_at <= t1:
            at = log.next_sample_at
            done = trip.done_km + km * (at - t0) / (t1 - t0)
            fraction = done / trip.distance_km if trip.distance_km > 0 else 1.0
            lat, lon = intermediate_point(trip.start_lat, trip.start_lon, trip.dest_lat, trip.dest_lon, fraction)
            log.sample(at, trip.speed_kmh, lat, lon)

    def _coarse(self, t: float) -> tuple[int, int, int, int]:
        """The continuous state at status resolution: a change here is worth a new status."""
        remaining_min = math.ceil(self.aux_remaining_s(t) / 60.0 - 1e-9)
        return (
            math.floor(self._odometer_km),
            math.floor(self._battery_v * 10 + 1e-9),
            math.floor(self._fuel_pct + 1e-9),
            remaining_min,
        )

    def _settle(self, t: float) -> None:
        """Handle every breakpoint reached at `t`."""
        if self._aux is not AuxState.OFF and t >= self._aux_until - _EPS_S:
            self._stop_aux(t, "duration elapsed")
        self._check_battery(t)
        if self._fuel_pct <= _EPS_PCT:
            self._fuel_pct = 0.0  # not a rounding residue of 1e-17 %
            if self._aux is AuxState.VENTILATION and self.capabilities.electric:
                self._stop_aux(t, "traction battery empty")
        trip = self._trip
        if trip is not None:
            if trip.distance_km - trip.done_km <= _EPS_KM:
                self._lat, self._lon = trip.dest_lat, trip.dest_lon
                self._park(t, trip, None)
            elif self._fuel_pct <= _EPS_PCT:
                self._park(t, trip, "battery empty" if self.capabilities.electric else "out of fuel")
        self._check_warnings(t)

    def _check_battery(self, t: float) -> None:
        if not self._battery_low and self._battery_v <= BATTERY_LOW_V + _EPS_V:
            self._battery_low = True
            self._revision += 1
            self._emit(EventType.BATTERY_LOW, t, detail=f"12 V battery at {self._battery_v:.2f} V")
            if self._aux is not AuxState.OFF:
                self._stop_aux(t, "battery_low")
        elif self._battery_low and self._battery_v >= _BATTERY_REARM_V:
            self._battery_low = False

    def _park(self, t: float, trip: _Trip, detail: str | None) -> None:
        self._trip = None
        self._parked_at = t
        self._revision += 1
        self._emit(EventType.PARKED, t, position=self._visible_position(), detail=detail)
        self._ignition = False
        self._emit(EventType.IGNITION_OFF, t)
        if trip.relock and not self._doors_open:
            self._locked = True
            self._emit(EventType.LOCKED, t)
        if self.sends_event(EventType.TRIP):
            self._emit(EventType.TRIP, t, trip=self._trip_summary(trip.log, t))

    def _trip_summary(self, log: _TripLog, t: float) -> Trip:
        """The finished trip as the car reports it (positions only when privacy is off)."""
        log.sample(t, 0.0, self._lat, self._lon)  # arrived: standing still
        caps = self.capabilities
        show = self._privacy is PrivacyMode.OFF
        distance = max(0.0, self._odometer_km - log.start_odometer_km)
        duration = max(0.0, t - log.started_at)
        return Trip(
            started_at=log.started_at,
            ended_at=t,
            start=_position(log.start_lat, log.start_lon) if show else None,
            end=_position(self._lat, self._lon) if show else None,
            distance_km=round(distance, 3),
            duration_s=round(duration, 3),
            average_speed_kmh=round(distance / duration * 3600.0, 1) if duration > 0 else 0.0,
            max_speed_kmh=round(log.max_speed_kmh, 1),
            energy_used=round(max(0.0, log.start_fuel_pct - self._fuel_pct) / 100.0 * caps.energy_capacity, 3),
            energy_unit="kWh" if caps.electric else "l",
            samples=[
                TripSample(
                    at=at, speed_kmh=round(speed, 1),
                    lat=round(lat, 6) if show else None, lon=round(lon, 6) if show else None,
                )
                for at, speed, lat, lon in log.samples or ()
            ],
        )

    # ------------------------------------------------------------------------------------------ remote commands

    def execute(self, op: CommandOp | str, params: BaseModel | Mapping[str, Any] | None, now: float) -> Outcome:
        """Carry out a remote command (already verified by the TCU) at `now`.

        `params` is the validated model from `command_params(op, ...)` (a mapping is validated here). Returns an
        `Outcome`; the command either fully applies or, when it fails, changes nothing. Raises `InvalidCommand`
        only for an unknown op or parameters that do not fit it.
        """
        op, checked = _command(op, params)
        self._catch_up(now)
        at = self._t
        refusal = self._refusal(op)
        if refusal is not None:
            reason, detail = refusal
            return Outcome(False, reason, detail, tuple(self._drain()))
        self._apply(op, checked, at)
        return Outcome(True, None, None, tuple(self._drain()))

    def _refusal(self, op: CommandOp) -> tuple[FailureReason, str] | None:
        """Why the car cannot carry out `op` now, or None. Checked in the order a car would notice."""
        caps = self.capabilities
        if self._privacy is PrivacyMode.MAX:
            return FailureReason.PRIVACY_MODE, "maximum privacy is on: remote services are off"
        if op in (CommandOp.AUX_HEATING_START, CommandOp.AUX_HEATING_STOP) and not caps.aux_heater:
            return FailureReason.UNSUPPORTED_BY_VEHICLE, f"a {self._model_name()} has no auxiliary heater"
        if op in (CommandOp.VENTILATION_START, CommandOp.VENTILATION_STOP) and not caps.ventilation:
            return FailureReason.UNSUPPORTED_BY_VEHICLE, f"a {self._model_name()} has no remote ventilation"
        if op in (CommandOp.LOCK, CommandOp.UNLOCK, CommandOp.HONK_AND_FLASH, *_STARTS) and self._trip is not None:
            return FailureReason.VEHICLE_MOVING, "the car is moving"
        if op in (CommandOp.LOCK, CommandOp.UNLOCK, *_STARTS) and self._ignition:
            return FailureReason.IGNITION_ON, "the ignition is on"
        if op is CommandOp.LOCK and self._doors_open:
            return FailureReason.DOOR_OPEN, "open: " + ", ".join(d.value for d in self.open_doors)
        if op in _STARTS and (self._battery_low or self._battery_v < BATTERY_LOW_V):  # latched until 11.9 V
            return FailureReason.BATTERY_LOW, f"12 V battery at {self._battery_v:.2f} V"
        if op is CommandOp.VENTILATION_START and caps.electric and self._fuel_pct < _EV_VENTILATION_MIN_PCT:
            return FailureReason.BATTERY_LOW, f"traction battery at {self._fuel_pct:.0f} %"
        return None

    def _apply(self, op: CommandOp, params: BaseModel, at: float) -> None:
        if op is CommandOp.LOCK:
            self._set_locked(True, at)
        elif op is CommandOp.UNLOCK:
            self._set_locked(False, at)
        elif op is CommandOp.AUX_HEATING_START:
            assert isinstance(params, AuxHeatingParams)
            self._start_aux(AuxState.HEATING, params.duration_min, params.target_temperature_c, at)
        elif op is CommandOp.VENTILATION_START:
            assert isinstance(params, VentilationParams)
            self._start_aux(AuxState.VENTILATION, params.duration_min, None, at)
        elif op is CommandOp.AUX_HEATING_STOP:
            if self._aux is AuxState.HEATING:
                self._stop_aux(at, "stopped")
        elif op is CommandOp.VENTILATION_STOP:
            if self._aux is AuxState.VENTILATION:
                self._stop_aux(at, "stopped")
        elif op is CommandOp.INFOTAINMENT_NOTIFY:
            assert isinstance(params, NotifyParams)
            self._notifications = (*self._notifications, params.message)[-MAX_NOTIFICATIONS:]
            self._emit(EventType.NOTIFICATION_SHOWN, at, message=params.message)
        # honk_and_flash and status.refresh change nothing the status reports

    def _start_aux(self, state: AuxState, duration_min: int, target: float | None, at: float) -> None:
        if self._aux is not AuxState.OFF and self._aux is not state:
            self._stop_aux(at, f"replaced by {state.value}")
        self._aux = state
        self._aux_until = at + duration_min * 60.0
        self._aux_target = target
        self._revision += 1
        if state is AuxState.HEATING:
            self._emit(EventType.AUX_HEATING_STARTED, at, detail=f"{duration_min} min at {target} °C")
        else:
            self._emit(EventType.VENTILATION_STARTED, at, detail=f"{duration_min} min")

    def _stop_aux(self, at: float, detail: str) -> None:
        finished = (
            EventType.AUX_HEATING_FINISHED if self._aux is AuxState.HEATING else EventType.VENTILATION_FINISHED
        )
        self._aux = AuxState.OFF
        self._aux_until = 0.0
        self._aux_target = None
        self._revision += 1
        self._emit(finished, at, detail=detail)

    def _set_locked(self, locked: bool, at: float) -> None:
        if self._locked is locked:
            return
        self._locked = locked
        self._revision += 1
        self._emit(EventType.LOCKED if locked else EventType.UNLOCKED, at)

    # ------------------------------------------------------------------------------------------ people at the car

    def control(self, action: ControlAction | str, params: Mapping[str, Any] | None, now: float) -> list[Event]:
        """Do what a person at the car does (simulator control) at `now`; the events it produced.

        Raises `InvalidControl` for an unknown action or bad parameters and `ControlRefused` when the car will
        not do it in its present state (e.g. key lock with a door open); either way the action changes nothing.
        """
        try:
            act = ControlAction(action)
        except ValueError:
            raise InvalidControl(str(action)[:40], "unknown action") from None
        handler = _CONTROLS.get(act)
        if handler is None:
            raise InvalidControl(act.value, "faults are applied by the TCU's fault layer, not the vehicle model")
        handler(self, ControlParams(act.value, params), now)
        return self._drain()

    def _ready(self, p: ControlParams, now: float) -> float:
        """Parameters are all read: refuse extras, let time run, and return the moment the action happens."""
        p.finish()
        self._catch_up(now)
        return self._t

    def _refuse_if_moving(self, action: str) -> None:
        if self._trip is not None:
            raise ControlRefused(action, "the car is moving", FailureReason.VEHICLE_MOVING)

    def _open_door(self, p: ControlParams, now: float) -> None:
        door = p.read(_DOOR)
        at = self._ready(p, now)
        if self._doors_open & _DOOR_BIT[door]:
            return
        self._refuse_if_moving("open_door")
        if self._locked:
            raise ControlRefused("open_door", "the car is locked: unlock it first")
        self._doors_open |= _DOOR_BIT[door]
        self._revision += 1
        self._emit(EventType.DOOR_OPENED, at, door=door)

    def _close_door(self, p: ControlParams, now: float) -> None:
        door = p.read(_DOOR)
        at = self._ready(p, now)
        if self._doors_open & _DOOR_BIT[door]:
            self._doors_open &= ~_DOOR_BIT[door]
            self._revision += 1
            self._emit(EventType.DOOR_CLOSED, at, door=door)

    def _open_window(self, p: ControlParams, now: float) -> None:
        window = p.read(_WINDOW)
        self._ready(p, now)
        if not self._windows_open & _WINDOW_BIT[window]:
            self._windows_open |= _WINDOW_BIT[window]
            self._revision += 1

    def _close_window(self, p: ControlParams, now: float) -> None:
        window = p.read(_WINDOW)
        self._ready(p, now)
        if self._windows_open & _WINDOW_BIT[window]:
            self._windows_open &= ~_WINDOW_BIT[window]
            self._revision += 1

    def _lock_key(self, p: ControlParams, now: float) -> None:
        at = self._ready(p, now)
        self._refuse_if_moving("lock_key")
        if self._ignition:
            raise ControlRefused("lock_key", "the ignition is on", FailureReason.IGNITION_ON)
        if self._doors_open:
            opened = ", ".join(d.value for d in self.open_doors)
            raise ControlRefused("lock_key", f"open: {opened}", FailureReason.DOOR_OPEN)
        self._set_locked(True, at)

    def _unlock_key(self, p: ControlParams, now: float) -> None:
        at = self._ready(p, now)
        self._refuse_if_moving("unlock_key")
        self._set_locked(False, at)

    def _ignition_on(self, p: ControlParams, now: float) -> None:
        at = self._ready(p, now)
        self._switch_ignition_on(at)

    def _switch_ignition_on(self, at: float) -> None:
        if self._ignition:
            return
        if self._aux is not AuxState.OFF:
            self._stop_aux(at, "ignition_on")
        self._ignition = True
        self._revision += 1
        self._emit(EventType.IGNITION_ON, at)

    def _ignition_off(self, p: ControlParams, now: float) -> None:
        at = self._ready(p, now)
        self._refuse_if_moving("ignition_off")
        if self._ignition:
            self._ignition = False
            self._revision += 1
            self._emit(EventType.IGNITION_OFF, at)

    def _drive_to(self, p: ControlParams, now: float) -> None:
        lat = p.read(_LAT)
        lon = p.read(_LON)
        speed = p.read(_SPEED, default=self._speed_kmh)
        at = self._ready(p, now)
        if self._doors_open:
            opened = ", ".join(d.value for d in self.open_doors)
            raise ControlRefused("drive_to", f"open: {opened}", FailureReason.DOOR_OPEN)
        if self.range_km < _MIN_RANGE_TO_DRIVE_KM:
            raise ControlRefused("drive_to", "the battery is empty" if self.capabilities.electric else "no fuel")
        relock = self._trip.relock if self._trip is not None else self._locked
        log = self._trip.log if self._trip is not None else _TripLog(
            started_at=at, start_lat=self._lat, start_lon=self._lon, start_odometer_km=self._odometer_km,
            start_fuel_pct=self._fuel_pct,
        )
        log.max_speed_kmh = max(log.max_speed_kmh, speed)
        log.sample(at, speed, self._lat, self._lon)  # a new leg: a sample at its start, at its speed
        self._set_locked(False, at)  # the driver opens the car with the key
        self._switch_ignition_on(at)
        self._trip = _Trip(
            start_lat=self._lat,
            start_lon=self._lon,
            dest_lat=lat,
            dest_lon=lon,
            distance_km=distance_km(self._lat, self._lon, lat, lon),
            speed_kmh=speed,
            relock=relock,
            log=log,
        )
        self._parked_at = None
        self._revision += 1
        self._emit(
            EventType.TRIP_STARTED,
            at,
            position=self._visible_position(),
            detail=f"{self._trip.distance_km:.1f} km at {speed:.0f} km/h",
        )

    def _set_privacy(self, p: ControlParams, now: float) -> None:
        mode = p.read(_PRIVACY)
        at = self._ready(p, now)
        if mode is not self._privacy:
            self._privacy = mode
            self._revision += 1
            self._emit(EventType.PRIVACY_CHANGED, at, privacy_mode=mode)

    def _refuse_enrolment(self, action: str, method: EnrolmentMethod | None) -> None:
        caps = self.capabilities
        if method is not None and caps.enrolment_method is not method:
            raise ControlRefused(
                action,
                f"a {self._model_name()} enrols by {caps.enrolment_method.value}",
                FailureReason.UNSUPPORTED_BY_VEHICLE,
            )
        if self._privacy is PrivacyMode.MAX:
            raise ControlRefused(action, "maximum privacy is on: online services are off", FailureReason.PRIVACY_MODE)
        self._refuse_if_moving(action)

    def _enter_pairing_code(self, p: ControlParams, now: float) -> None:
        code = p.read(_CODE)
        at = self._ready(p, now)
        self._refuse_enrolment("enter_pairing_code", EnrolmentMethod.PAIRING_CODE)
        self._emit(EventType.PAIRING_CODE_ENTERED, at, pairing_code=code)

    def _tkov(self, p: ControlParams, now: float) -> None:
        keys = p.read(_KEYS)
        at = self._ready(p, now)
        self._refuse_enrolment("tkov", EnrolmentMethod.TKOV)
        if keys < 2:
            raise ControlRefused("tkov", "two-key owner verification needs both keys")
        self._emit(EventType.TKOV_COMPLETED, at)

    def _infotainment_login(self, p: ControlParams, now: float) -> None:
        email = p.read(_EMAIL)
        password = p.read(_PASSWORD_PARAM)
        at = self._ready(p, now)
        if not self.capabilities.infotainment_login:
            raise ControlRefused(
                "infotainment_login",
                f"a {self._model_name()} has no user menu to log in from",
                FailureReason.UNSUPPORTED_BY_VEHICLE,
            )
        self._refuse_enrolment("infotainment_login", None)
        self._infotainment_user = email
        self._emit(EventType.INFOTAINMENT_LOGIN, at, email=email, password=SecretStr(password))

    def _factory_reset(self, p: ControlParams, now: float) -> None:
        at = self._ready(p, now)
        self._refuse_if_moving("factory_reset")
        privacy_changed = self._privacy is not PrivacyMode.OFF
        self._privacy = PrivacyMode.OFF
        self._notifications = ()
        self._infotainment_user = None
        self._revision += 1
        self._emit(EventType.FACTORY_RESET, at)
        if privacy_changed:
            self._emit(EventType.PRIVACY_CHANGED, at, privacy_mode=PrivacyMode.OFF)

    def _ecall(self, p: ControlParams, now: float) -> None:
        at = self._ready(p, now)
        # The law requires the position in an emergency call whatever the privacy mode.
        self._emit(EventType.ECALL, at, position=_position(self._lat, self._lon), detail="manual")

    def _breakdown_call(self, p: ControlParams, now: float) -> None:
        at = self._ready(p, now)
        # Online roadside assistance is a service, not the law: not in maximum privacy, no position in no_position.
        if self._privacy is PrivacyMode.MAX:
            raise ControlRefused(
                "breakdown_call", "maximum privacy is on: online services are off", FailureReason.PRIVACY_MODE
            )
        where = "moving" if self._trip is not None else "standing"
        self._emit(EventType.BREAKDOWN_CALL, at, position=self._visible_position(), detail=where)

    def _lights_on(self, p: ControlParams, now: float) -> None:
        self._ready(p, now)
        if not self._lights:
            self._lights = True
            self._revision += 1

    def _lights_off(self, p: ControlParams, now: float) -> None:
        self._ready(p, now)
        if self._lights:
            self._lights = False
            self._revision += 1

    def _set_battery(self, p: ControlParams, now: float) -> None:
        volts = p.read(_VOLTAGE)
        at = self._ready(p, now)
        if volts != self._battery_v:
            self._battery_v = volts
            self._revision += 1
            self._check_battery(at)

    # ------------------------------------------------------------------------------------------ status

    def snapshot(self, now: float, *, online: bool, signal_pct: int) -> StatusSnapshot:
        """The SPEC §2.4 status at `now` (time runs up to `now` first; its events wait for the next call).

        The snapshot exists in every privacy mode; whether to send it is `sends_status()`.
        """
        self._catch_up(now)
        t = self._t
        locked = self._locked
        doors = Doors(
            **{d.value: DoorState(open=bool(self._doors_open & _DOOR_BIT[d]), locked=locked) for d in _DOORS}
        )
        windows = Windows(
            **{
                w.value: WindowState.OPEN if self._windows_open & _WINDOW_BIT[w] else WindowState.CLOSED
                for w in _WINDOWS
            }
        )
        parking = None
        if self._trip is None and self._parked_at is not None and self._privacy is PrivacyMode.OFF:
            parking = ParkingPosition(lat=round(self._lat, 6), lon=round(self._lon, 6), parked_at=self._parked_at)
        remaining_s = self.aux_remaining_s(t)
        return StatusSnapshot(
            updated_at=t,
            connection=ConnectionInfo(online=online, signal_pct=max(0, min(100, int(signal_pct)))),
            privacy_mode=self._privacy,
            ignition=OnOff.ON if self._ignition else OnOff.OFF,
            moving=self._trip is not None,
            locked=locked,
            doors=doors,
            windows=windows,
            lights=OnOff.ON if self._lights else OnOff.OFF,
            parking_position=parking,
            aux_heating=AuxHeating(
                state=self._aux,
                remaining_min=math.ceil(remaining_s / 60.0 - 1e-9) if remaining_s > 0 else 0,
                target_temperature_c=self._aux_target,
            ),
            battery_12v_v=round(self._battery_v, 2),
            fuel_level_pct=round(self._fuel_pct, 1),
            range_km=round(self.range_km, 1),
            odometer_km=round(self._odometer_km, 1),
            health=Health(
                warnings=self._health_warnings(t),
                inspection_due_days=math.floor((self._inspection_due_at - t) / DAY_S),
                oil_service_due_km=math.floor(self._service_due_at_km - self._odometer_km),
            ),
        )

    def _health_warnings(self, t: float) -> list[str]:
        warnings = list(self._warnings)
        if self._battery_low or self._battery_v < BATTERY_LOW_V:
            warnings.append("battery_12v_low")
        if self._fuel_pct < _LOW_ENERGY_PCT:
            warnings.append("charge_low" if self.capabilities.electric else "fuel_low")
        if self._inspection_due_at < t:
            warnings.append("inspection_overdue")
        if self._service_due_at_km < self._odometer_km:
            warnings.append("service_overdue")
        return warnings

    def _check_warnings(self, t: float) -> None:
        """Report each health warning that appeared since the last report (once, until it goes away), at `t`."""
        now = tuple(self._health_warnings(t))
        if now == self._reported_warnings:
            return
        for warning in now:
            if warning not in self._reported_warnings:
                self._emit(EventType.HEALTH_WARNING, t, warning=warning)
        self._reported_warnings = now

    # ------------------------------------------------------------------------------------------ helpers

    def _emit(self, event_type: EventType, at: float, **fields: Any) -> None:
        """Queue an event for the caller, unless the privacy mode keeps it in the car."""
        if not self.sends_event(event_type):
            return
        event = Event(type=event_type, at=at, **fields)
        if self._pending is None:
            self._pending = [event]
        else:
            self._pending.append(event)

    def _drain(self) -> list[Event]:
        self._check_warnings(self._t)
        events = self._pending or []
        self._pending = None
        return events

    def _visible_position(self) -> Position | None:
        """The position an event may carry: none unless privacy is off."""
        return _position(self._lat, self._lon) if self._privacy is PrivacyMode.OFF else None

    def _model_name(self) -> str:
        return f"{self.model.value} with {self.equipment.value}"


_STARTS: Final = (CommandOp.AUX_HEATING_START, CommandOp.VENTILATION_START)

_CONTROLS: Final[dict[ControlAction, Callable[[Vehicle, ControlParams, float], None]]] = {
    ControlAction.OPEN_DOOR: Vehicle._open_door,
    ControlAction.CLOSE_DOOR: Vehicle._close_door,
    ControlAction.OPEN_WINDOW: Vehicle._open_window,
    ControlAction.CLOSE_WINDOW: Vehicle._close_window,
    ControlAction.LOCK_KEY: Vehicle._lock_key,
    ControlAction.UNLOCK_KEY: Vehicle._unlock_key,
    ControlAction.IGNITION_ON: Vehicle._ignition_on,
    ControlAction.IGNITION_OFF: Vehicle._ignition_off,
    ControlAction.DRIVE_TO: Vehicle._drive_to,
    ControlAction.SET_PRIVACY: Vehicle._set_privacy,
    ControlAction.ENTER_PAIRING_CODE: Vehicle._enter_pairing_code,
    ControlAction.TKOV: Vehicle._tkov,
    ControlAction.INFOTAINMENT_LOGIN: Vehicle._infotainment_login,
    ControlAction.FACTORY_RESET: Vehicle._factory_reset,
    ControlAction.ECALL: Vehicle._ecall,
    ControlAction.LIGHTS_ON: Vehicle._lights_on,
    ControlAction.LIGHTS_OFF: Vehicle._lights_off,
    ControlAction.SET_BATTERY: Vehicle._set_battery,
    ControlAction.BREAKDOWN_CALL: Vehicle._breakdown_call,
}

#: What each control takes (none: no parameters) — `tcu-sim car --help` prints it from here.
CONTROL_PARAMS: Final[dict[ControlAction, tuple[Param, ...]]] = {
    ControlAction.OPEN_DOOR: (_DOOR,),
    ControlAction.CLOSE_DOOR: (_DOOR,),
    ControlAction.OPEN_WINDOW: (_WINDOW,),
    ControlAction.CLOSE_WINDOW: (_WINDOW,),
    ControlAction.DRIVE_TO: (_LAT, _LON, _SPEED),
    ControlAction.SET_PRIVACY: (_PRIVACY,),
    ControlAction.ENTER_PAIRING_CODE: (_CODE,),
    ControlAction.TKOV: (_KEYS,),
    ControlAction.INFOTAINMENT_LOGIN: (_EMAIL, _PASSWORD_PARAM),
    ControlAction.SET_BATTERY: (_VOLTAGE,),
}


def check_control(action: ControlAction, params: Mapping[str, Any] | None) -> None:
    """Raise `InvalidControl` when `params` are not what `action` takes (as the car would, before sending it)."""
    p = ControlParams(action.value, params)
    for param in CONTROL_PARAMS.get(action, ()):
        p.read(param, default=param.low if param.optional else None)
    p.finish()


def _command(op: CommandOp | str, params: BaseModel | Mapping[str, Any] | None) -> tuple[CommandOp, BaseModel]:
    """The op and its validated parameters, or `InvalidCommand`."""
    try:
        command_op = CommandOp(op)
    except ValueError:
        raise InvalidCommand(f"unknown command op {str(op)[:40]!r}") from None
    expected = COMMAND_PARAMS[command_op]
    if isinstance(params, BaseModel):
        if not isinstance(params, expected):
            raise InvalidCommand(f"{command_op.value}: params must be {expected.__name__}")
        return command_op, params
    try:
        return command_op, command_params(command_op, params or {})
    except ProtocolError as exc:
        raise InvalidCommand(f"{command_op.value}: {exc.detail}") from None


def _position(lat: float, lon: float) -> Position:
    return Position(lat=round(lat, 6), lon=round(lon, 6))


def _check_now(now: float) -> float:
    if isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now) or now < 0:
        raise VehicleError("now: must be a finite, non-negative number of seconds")
    return float(now)


def _check_range(name: str, value: float, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise VehicleError(f"{name}: must be a number between {low} and {high}")
    return float(value)
