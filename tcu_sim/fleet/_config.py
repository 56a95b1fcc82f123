"""The fleet file (`fleet_configs/*.yaml`) as pydantic models: car groups, no-signal zones, users, scenario.

Every model is frozen and refuses unknown keys. Checks that span several parts of the file (duplicate names,
users selecting unknown groups or cars, two primary users on one car, model/equipment combinations) raise
errors that carry their path inside the file, so `load_fleet` can say `groups[1].equipment: ...` rather than
"somewhere".
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from datetime import date
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from tcu_sim.fleet._duration import Duration
from tcu_sim.fleet._geo import distance_m, point_in_polygon
from tcu_sim.fleet._selectors import GROUP_NAME_PATTERN, SELECTOR_PATTERN, CarSelector, parse_selector
from tcu_sim.fleet._streams import fleet_vins
from tcu_sim.vehicle import Equipment, UnsupportedConfiguration, VehicleModel, capabilities

__all__ = [
    "AgeRange",
    "Circle",
    "Connectivity",
    "ConnectivityProfile",
    "Coordinates",
    "FleetConfig",
    "FleetDefaults",
    "GroupConfig",
    "HomeArea",
    "OutageDistribution",
    "ScenarioAction",
    "ScenarioStep",
    "UserConfig",
    "UserRole",
    "Zone",
    "ZoneKind",
]

MAX_GARAGE = 50  # R9: a user's garage holds up to 50 cars
MAX_FLEET = 1_000_000


def config_problem(path: str, problem: str) -> PydanticCustomError:
    """A validation error at `path` below the model being validated (the loader appends it to the loc)."""
    return PydanticCustomError("fleet_config", "{problem}", {"path": path, "problem": problem})


def _lower(value: Any) -> Any:
    # `model: Leon` reads naturally in YAML; the catalogue's values are lower case.
    return value.lower() if isinstance(value, str) else value


def _check_selector(value: str) -> str:
    parse_selector(value)
    return value


def _as_tuple(value: Any) -> Any:
    # `cars: leon` and `cars: [leon, born]` both read naturally.
    return (value,) if isinstance(value, str) else value


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


Latitude = Annotated[float, Field(ge=-90, le=90, strict=True)]
Longitude = Annotated[float, Field(ge=-180, le=180, strict=True)]
Selector = Annotated[
    str,
    AfterValidator(_check_selector),
    WithJsonSchema({"type": "string", "pattern": SELECTOR_PATTERN, "examples": ["all", "leon", "leon[0:5]"]}),
]
Selectors = Annotated[tuple[Selector, ...], BeforeValidator(_as_tuple)]
PositiveDuration = Annotated[Duration, Field(gt=0, le=86_400)]
Model = Annotated[VehicleModel, BeforeValidator(_lower)]
Kit = Annotated[Equipment, BeforeValidator(_lower)]


class Coordinates(_Model):
    """A WGS-84 position in decimal degrees."""

    lat: Latitude
    lon: Longitude


class HomeArea(_Model):
    """Where a group's cars are parked when the run starts: uniformly spread over a disc."""

    center: Coordinates
    radius_km: float = Field(ge=0, le=500, strict=True)


class AgeRange(_Model):
    """A registration age in days, drawn uniformly per car from `min..max` (both included)."""

    min: int = Field(ge=0, le=36_500, strict=True)
    max: int = Field(ge=0, le=36_500, strict=True)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min > self.max:
            raise config_problem("max", f"must be >= min ({self.min}), got {self.max}")
        return self


class ConnectivityProfile(StrEnum):
    """How a car's mobile connection behaves over a run."""

    GOOD = "good"
    WEAK = "weak"
    FLAKY = "flaky"
    OFFLINE = "offline"


class OutageDistribution(StrEnum):
    """How the length of each outage of a flaky connection is drawn around its mean `outage_s`."""

    FIXED = "fixed"
    UNIFORM = "uniform"  # between half and one and a half times the mean
    EXPONENTIAL = "exponential"  # many short outages, a few long ones (memoryless, like a radio cell)


_SIGNAL = {
    ConnectivityProfile.GOOD: 85,
    ConnectivityProfile.WEAK: 20,
    ConnectivityProfile.FLAKY: 60,
    ConnectivityProfile.OFFLINE: 0,
}
_DEFAULT_DROP_RATE = 0.1
_DEFAULT_OUTAGE_S = 30.0


class Connectivity(_Model):
    """A car's connection profile. Unset fields take the profile's defaults (see `resolved()`).

    - `signal_pct`: reported signal strength (good 85, weak 20, flaky 60, offline 0).
    - `drop_rate` (flaky only): chance, per minute connected, that the connection drops (default 0.1).
    - `outage_s` (flaky: length of each drop, default 30 s; offline: how long the car stays offline from the
      start, unset = the whole run).
    - `outage_distribution` (flaky only): how each outage's length is drawn around `outage_s` (default
      exponential; also fixed, uniform).
    """

    profile: ConnectivityProfile = ConnectivityProfile.GOOD
    signal_pct: int | None = Field(default=None, ge=0, le=100, strict=True)
    drop_rate: float | None = Field(default=None, ge=0, le=1, strict=True)
    outage_s: PositiveDuration | None = None
    outage_distribution: OutageDistribution | None = None

    @model_validator(mode="after")
    def _fits_profile(self) -> Self:
        if self.drop_rate is not None and self.profile is not ConnectivityProfile.FLAKY:
            raise config_problem("drop_rate", f"applies to profile 'flaky' only, not {self.profile.value!r}")
        if self.outage_s is not None and self.profile not in (
            ConnectivityProfile.FLAKY,
            ConnectivityProfile.OFFLINE,
        ):
            raise config_problem("outage_s", f"applies to profiles 'flaky' and 'offline', not {self.profile.value!r}")
        if self.outage_distribution is not None and self.profile is not ConnectivityProfile.FLAKY:
            raise config_problem(
                "outage_distribution", f"applies to profile 'flaky' only, not {self.profile.value!r}"
            )
        if self.profile is ConnectivityProfile.OFFLINE and self.signal_pct:
            raise config_problem("signal_pct", "an offline car has no signal; leave signal_pct out")
        return self

    def resolved(self) -> Connectivity:
        """This profile with every default filled in (what a car actually runs with)."""
        flaky = self.profile is ConnectivityProfile.FLAKY
        return Connectivity(
            profile=self.profile,
            signal_pct=_SIGNAL[self.profile] if self.signal_pct is None else self.signal_pct,
            drop_rate=(_DEFAULT_DROP_RATE if self.drop_rate is None else self.drop_rate) if flaky else None,
            outage_s=_DEFAULT_OUTAGE_S if flaky and self.outage_s is None else self.outage_s,
            outage_distribution=(self.outage_distribution or OutageDistribution.EXPONENTIAL) if flaky else None,
        )


class FleetDefaults(_Model):
    """Values a group takes when it does not set its own."""

    status_interval_s: PositiveDuration = 60.0
    connectivity: Connectivity = Connectivity()
    home_area: HomeArea | None = None
    registered_age_days: AgeRange = AgeRange(min=30, max=300)


class GroupConfig(_Model):
    """`count` cars of one model and equipment, parked around `home_area`."""

    name: str = Field(pattern=GROUP_NAME_PATTERN)
    count: int = Field(ge=1, le=100_000, strict=True)
    model: Model
    equipment: Kit
    home_area: HomeArea | None = None
    status_interval_s: PositiveDuration | None = None
    connectivity: Connectivity | None = None
    registered_at: date | None = None
    registered_age_days: AgeRange | None = None

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        if name == "all":
            raise ValueError("'all' is reserved: it selects every car of the fleet")
        return name

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        try:
            capabilities(self.model, self.equipment)
        except UnsupportedConfiguration as exc:
            raise config_problem("equipment", str(exc)) from None
        if self.registered_at is not None and self.registered_age_days is not None:
            raise config_problem("registered_age_days", "give either registered_at or registered_age_days, not both")
        if self.registered_at is not None and self.registered_at < date(1990, 1, 1):
            raise config_problem("registered_at", f"must be 1990-01-01 or later, got {self.registered_at}")
        return self


class ZoneKind(StrEnum):
    """What a no-signal zone is."""

    TUNNEL = "tunnel"
    UNDERGROUND_PARKING = "underground_parking"


class Circle(_Model):
    """A round zone."""

    center: Coordinates
    radius_m: float = Field(gt=0, le=100_000, strict=True)


class Zone(_Model):
    """A place without mobile signal (tunnel, underground car park): a circle, or a polygon of [lat, lon]."""

    name: str = Field(min_length=1, max_length=100)
    kind: ZoneKind
    circle: Circle | None = None
    polygon: tuple[tuple[Latitude, Longitude], ...] | None = Field(default=None, min_length=3, max_length=1000)

    @model_validator(mode="after")
    def _one_shape(self) -> Self:
        if self.circle is None and self.polygon is None:
            raise config_problem("", "needs a shape: circle {center, radius_m} or polygon [[lat, lon], ...]")
        if self.circle is not None and self.polygon is not None:
            raise config_problem("polygon", "give exactly one shape: circle or polygon, not both")
        return self

    def contains(self, lat: float, lon: float) -> bool:
        """Whether the point lies in this zone (the border counts as inside)."""
        if self.circle is not None:
            return distance_m(lat, lon, self.circle.center.lat, self.circle.center.lon) <= self.circle.radius_m
        assert self.polygon is not None  # one of the two shapes is always set (validated)
        return point_in_polygon(lat, lon, self.polygon)


class UserRole(StrEnum):
    """The user's role on the cars they list (R8, R10)."""

    PRIMARY = "primary"
    SECONDARY = "secondary"


_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")


def _is_trivial_spin(spin: str) -> bool:
    """R2, the cloud's rule (broker.cloud's spin_policy_problem): one digit repeated (7777), a run up or down,
    also across 9/0 (1234, 7890, 4321, 2109), or a repeated pair (1212)."""
    steps = {(int(b) - int(a)) % 10 for a, b in itertools.pairwise(spin)}
    return steps in ({0}, {1}, {9}) or spin[:2] == spin[2:]


class UserConfig(_Model):
    """A CUPRA ID that exists when the run starts, and the cars it has enrolled.

    `vehicles` are selectors (see `tcu_sim.fleet` docs); the user is `role` on each of them. `verified`: the
    e-mail address is already confirmed (R1).
    """

    email: str = Field(max_length=254)
    password: SecretStr
    spin: SecretStr
    vehicles: Selectors = ()
    role: UserRole = UserRole.PRIMARY
    verified: bool = True

    @field_validator("email")
    @classmethod
    def _email(cls, email: str) -> str:
        if not _EMAIL.match(email):
            raise ValueError(f"not an e-mail address: {email!r}")
        return email

    @field_validator("password", mode="before")
    @classmethod
    def _password(cls, value: Any) -> Any:
        # Messages here never repeat the value: it is a secret.
        if not isinstance(value, str):
            raise ValueError("must be a string (quote it)")
        if len(value) < 8:
            raise ValueError("must be at least 8 characters long")
        return value

    @field_validator("spin", mode="before")
    @classmethod
    def _spin(cls, value: Any) -> Any:
        if not isinstance(value, str):
            # YAML reads 2580 as a number and 0123 as octal 83: only a quoted string keeps the digits.
            raise ValueError('must be a quoted string of 4 digits, e.g. spin: "2580"')
        if not re.fullmatch(r"[0-9]{4}", value):
            raise ValueError("must be exactly 4 digits")
        if _is_trivial_spin(value):
            raise ValueError(
                "is trivial (one digit, a run like 1234 / 4321, or a pair twice); the cloud refuses it (R2)"
            )
        return value

    @property
    def selectors(self) -> tuple[CarSelector, ...]:
        """The parsed `vehicles` selectors."""
        return tuple(parse_selector(text) for text in self.vehicles)


class ScenarioAction(StrEnum):
    """What a scenario step does.

    Car actions (need `cars`): what a person does at the car (the simulator control actions of
    `sim/{vin}/control`), connectivity and time faults, transport faults on the cars' proxy routes, attacks
    on the cars, and app requests about them (`app`, with `user`). Broker actions (no `cars`): stop, kill or
    restart the broker the run started. `check` only evaluates its `expect` entries; `fast_forward` moves the
    clock on by `duration` at once. `tcu_sim.faults` documents every fault's `params`, `tcu_sim.scenario` the
    `expect` entries.
    """

    # simulator control (tcu_sim.protocol.ControlAction)
    OPEN_DOOR = "open_door"
    CLOSE_DOOR = "close_door"
    OPEN_WINDOW = "open_window"
    CLOSE_WINDOW = "close_window"
    LOCK_KEY = "lock_key"
    UNLOCK_KEY = "unlock_key"
    IGNITION_ON = "ignition_on"
    IGNITION_OFF = "ignition_off"
    DRIVE_TO = "drive_to"
    SET_PRIVACY = "set_privacy"
    ENTER_PAIRING_CODE = "enter_pairing_code"
    TKOV = "tkov"
    INFOTAINMENT_LOGIN = "infotainment_login"
    FACTORY_RESET = "factory_reset"
    ECALL = "ecall"
    LIGHTS_ON = "lights_on"
    LIGHTS_OFF = "lights_off"
    SET_BATTERY = "set_battery"
    BREAKDOWN_CALL = "breakdown_call"
    FAULT = "fault"
    # connectivity and time faults on cars
    GO_OFFLINE = "go_offline"
    GO_ONLINE = "go_online"
    WEAK_SIGNAL = "weak_signal"
    FLAKY = "flaky"
    CLOCK_SKEW = "clock_skew"
    RESTART_CAR = "restart_car"
    # broker
    BROKER_STOP = "broker_stop"
    BROKER_KILL = "broker_kill"
    BROKER_RESTART = "broker_restart"
    # transport faults (the cars' fault-proxy routes)
    LATENCY = "latency"
    BANDWIDTH = "bandwidth"
    BLACK_HOLE = "black_hole"
    RESET_CONNECTIONS = "reset_connections"
    SLICER = "slicer"
    DATA_LIMIT = "data_limit"
    CLEAR_FAULTS = "clear_faults"
    # attacks, app requests, checks and time (scenario runs)
    ATTACK = "attack"
    APP = "app"
    CHECK = "check"
    FAST_FORWARD = "fast_forward"

    @property
    def targets_cars(self) -> bool:
        """Whether the step acts on cars (and so needs `cars`)."""
        return not self.value.startswith("broker_") and self not in _NO_CARS

    @property
    def cars_optional(self) -> bool:
        """Whether `cars` may be given without being needed (a `check` names the cars its expectations mean)."""
        return self is ScenarioAction.CHECK


_NO_CARS = frozenset({ScenarioAction.CHECK, ScenarioAction.FAST_FORWARD})


class ScenarioStep(_Model):
    """At `at` after the start, do `do` on `cars` (for `duration`, when the action lasts), with `params`.

    `name` labels the step in reports; `user` (an e-mail of `users`) is who acts in an `app` step; `expect`
    lists what must hold afterwards (checked by `tcu-sim scenario run`; see `tcu_sim.scenario` for the forms).
    """

    at: Duration
    do: ScenarioAction
    cars: Selectors | None = None
    duration: PositiveDuration | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    name: str | None = Field(default=None, min_length=1, max_length=100)
    user: str | None = Field(default=None, max_length=254)
    expect: tuple[dict[str, Any], ...] = ()

    @model_validator(mode="after")
    def _cars_fit_action(self) -> Self:
        if self.do.targets_cars and not self.cars:
            raise config_problem("cars", f"{self.do.value} acts on cars: say which (all, a group, 'leon[0:5]', a VIN)")
        if not self.do.targets_cars and not self.do.cars_optional and self.cars is not None:
            what = "the broker" if self.do.value.startswith("broker_") else "the clock"
            raise config_problem("cars", f"{self.do.value} acts on {what}, not on cars; leave cars out")
        if self.do is ScenarioAction.APP and self.user is None:
            raise config_problem("user", "an app step needs the user who acts (an e-mail of users)")
        if self.do is not ScenarioAction.APP and self.user is not None:
            raise config_problem("user", f"only app steps have a user, not {self.do.value}")
        if self.do is ScenarioAction.FAST_FORWARD and self.duration is None:
            raise config_problem("duration", "fast_forward needs the duration to skip")
        return self


def _check_topic_prefix(prefix: str) -> str:
    if not prefix:
        return prefix
    if prefix.startswith("$"):
        raise ValueError("must not start with '$' (reserved for broker topics)")
    for level in prefix.split("/"):
        if not level:
            raise ValueError("has an empty level (leading, trailing or double '/')")
        if {"+", "#", "\x00"} & set(level):
            raise ValueError("must not contain '+', '#' or NUL")
    return prefix


class FleetConfig(_Model):
    """A whole fleet file. Load one with `load_fleet(path)`; expand it to cars with `expand_fleet(config)`."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    seed: int = Field(strict=True)
    description: str = ""
    topic_prefix: Annotated[str, AfterValidator(_check_topic_prefix)] = ""
    #: The broker URLs the cars connect to when `fleet run` gets no --broker: the nodes of a cluster, in the order
    #: a car tries them (it fails over to the next when its node is lost), e.g. ["mqtts://n1:8883", ...].
    brokers: tuple[str, ...] = ()
    defaults: FleetDefaults = FleetDefaults()
    # At least one group: checked in the model validator, since a length constraint here would add a confusing
    # "at least 1 item" error whenever every group has some other fault.
    groups: tuple[GroupConfig, ...]
    zones: tuple[Zone, ...] = ()
    users: tuple[UserConfig, ...] = ()
    scenario: tuple[ScenarioStep, ...] = ()

    @property
    def car_count(self) -> int:
        """How many cars the fleet has."""
        return sum(group.count for group in self.groups)

    def group(self, name: str) -> GroupConfig:
        """The group called `name` (KeyError if none)."""
        for group in self.groups:
            if group.name == name:
                return group
        raise KeyError(name)

    def zone_at(self, lat: float, lon: float) -> Zone | None:
        """The first no-signal zone containing the point, if any."""
        return next((zone for zone in self.zones if zone.contains(lat, lon)), None)

    @model_validator(mode="after")
    def _cross_references(self) -> Self:
        if not self.groups:
            raise config_problem("groups", "a fleet needs at least 1 group")
        if self.car_count > MAX_FLEET:
            raise config_problem("groups", f"{self.car_count} cars in all; at most {MAX_FLEET} are supported")
        # Every cross-reference problem at once (the loader lists each with its line), not one per run.
        problems: list[tuple[str, str]] = []
        _unique((g.name for g in self.groups), "groups[{}].name", "group name", problems)
        _unique((z.name for z in self.zones), "zones[{}].name", "zone name", problems)
        _unique((u.email.lower() for u in self.users), "users[{}].email", "user e-mail", problems)
        for i, group in enumerate(self.groups):
            if group.home_area is None and self.defaults.home_area is None:
                problems.append((f"groups[{i}].home_area", "missing: set it here or in defaults.home_area"))
        if not problems:  # with duplicate group names, what a selector names is not clear yet
            _check_users_and_steps(self, problems)
        if problems:
            raise config_problems(problems)
        return self


def config_problems(problems: list[tuple[str, str]]) -> PydanticCustomError:
    """Several `(path, problem)`s found together (the loader reports each as its own error)."""
    if len(problems) == 1:
        return config_problem(*problems[0])
    text = "; ".join(f"{path}: {problem}" for path, problem in problems)
    return PydanticCustomError("fleet_config_many", "{text}", {"text": text, "problems": problems})


def _unique(names: Iterator[str] | Any, path: str, what: str, problems: list[tuple[str, str]]) -> None:
    first: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in first:
            problems.append(
                (path.format(i), f"duplicate {what} {name!r} (also at {path.format(first[name])})")
            )
        else:
            first[name] = i


Car = tuple[str, int]  # (group name, index in group): a car's identity before VINs exist


def _check_users_and_steps(config: FleetConfig, problems: list[tuple[str, str]]) -> None:
    """Every selector names existing cars; each car has at most one primary user; garages fit R9 (each problem
    appended to `problems`)."""
    counts = {g.name: g.count for g in config.groups}
    needs_vins = any(
        parse_selector(text).vin is not None
        for texts in [u.vehicles for u in config.users] + [s.cars or () for s in config.scenario]
        for text in texts
    )
    by_vin: dict[str, Car] = {}
    if needs_vins:
        for group, vins in zip(config.groups, fleet_vins(config.seed, counts.items()), strict=True):
            by_vin.update((vin, (group.name, i)) for i, vin in enumerate(vins))

    def resolve(text: str, path: str) -> list[Car]:
        selector = parse_selector(text)
        if selector.everything:
            return [(name, i) for name, count in counts.items() for i in range(count)]
        if selector.vin is not None:
            if selector.vin not in by_vin:
                problems.append((path, f"no car of this fleet has VIN {selector.vin}"))
                return []
            return [by_vin[selector.vin]]
        assert selector.group is not None  # a selector is all, a VIN or a group
        if selector.group not in counts:
            known = ", ".join(counts)
            problems.append((path, f"unknown group {selector.group!r} (groups: {known})"))
            return []
        count = counts[selector.group]
        if (selector.stop or 0) > count or (selector.start or 0) >= count:
            problems.append((path, f"{text!r} reaches past group {selector.group!r}, which has {count} cars"))
            return []
        return [(selector.group, i) for i in selector.indices(count)]

    primary_of: dict[Car, int] = {}
    secondary: list[tuple[Car, int, int]] = []
    for u, user in enumerate(config.users):
        garage: set[Car] = set()
        for s, text in enumerate(user.vehicles):
            path = f"users[{u}].vehicles[{s}]"
            for car in resolve(text, path):
                garage.add(car)
                if user.role is UserRole.SECONDARY:
                    secondary.append((car, u, s))
                elif primary_of.setdefault(car, u) != u:
                    other = config.users[primary_of[car]].email
                    problems.append(
                        (path, f"car {car[0]}[{car[1]}] already has primary user {other} (a car has one, R8)")
                    )
        if len(garage) > MAX_GARAGE:
            problems.append(
                (f"users[{u}].vehicles", f"selects {len(garage)} cars; a garage holds at most {MAX_GARAGE} (R9)")
            )
    for car, u, s in secondary:
        if car not in primary_of:
            problems.append((
                f"users[{u}].vehicles[{s}]",
                f"car {car[0]}[{car[1]}] has no primary user; a secondary user is nominated by one (R10)",
            ))
    emails = {user.email.lower() for user in config.users}
    for i, step in enumerate(config.scenario):
        for s, text in enumerate(step.cars or ()):
            resolve(text, f"scenario[{i}].cars[{s}]")
        if step.user is not None and step.user.lower() not in emails:
            problems.append((f"scenario[{i}].user", f"no user {step.user!r} in users"))
