"""Expectations of a scenario step (`expect:` entries), as data (pure).

Each entry is a mapping with one *what* key, optional `cars` (selectors; default: the step's cars, else all)
and `within` (clock time to wait for it to hold; default 1 minute):

    # the outcome of the step itself
    - error: SPIN_INCORRECT        # app step: the cloud answered this error code ...
      remaining_tries: 2           # ... with these details (also locked_seconds)
    - ok: true                     # app step: the cloud accepted the request
    - state: rejected              # app command step: the command ends in this state ...
      reason: expired              # ... with this reason (optional)
    - rejected: replayed           # attack on a car: the car answered `rejected` with this reason
    - refused: duplicate           # attack on the cloud: the cloud refused the message with this reason
    - unchanged: true              # attack: nothing changed, in the car nor in the cloud
    # the cars, as the TCUs and the cloud see them
    - online: false                # TCU disconnected and the cloud has the last will
    - delivered: true              # every message the cars signed reached the cloud: no seq missing, none twice
      since: 1m30s                 # ... of those signed from this clock time on (optional)
    - applied_once: true           # no message of the cars was applied twice (however often it arrived)
    - locked: true                 # the vehicles are locked
    - outbox_min: 1                # at least (outbox_max: at most) this many messages wait in each outbox
    - in_zone: Túnel de la Rovira  # the cars are inside this no-signal zone (null: in none)
    - cloud_status: {locked: false, connection.signal_pct: 15}   # the status the cloud keeps, field by field
    - cloud_refused: not_yet_valid # the cloud refused at least one message of each car for this reason
    # the car services
    - alerts: {speed: 1, area: 2}  # exactly these many speed and area alerts fired for each car since the start
    - trips_min: 1                 # the cloud keeps at least this many trips of each car (driving data)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from tcu_sim.faults import FaultSpecError
from tcu_sim.fleet import ScenarioAction, format_duration, parse_duration, parse_selector
from tcu_sim.protocol import CommandState, ErrorCode, RefusalReason, RejectReason

__all__ = ["DEFAULT_WITHIN_S", "ExpectKind", "Expectation", "parse_expectation"]

DEFAULT_WITHIN_S = 60.0


class ExpectKind(StrEnum):
    """The *what* key of an expectation."""

    ERROR = "error"
    OK = "ok"
    STATE = "state"
    REJECTED = "rejected"
    REFUSED = "refused"
    UNCHANGED = "unchanged"
    ONLINE = "online"
    DELIVERED = "delivered"
    APPLIED_ONCE = "applied_once"
    LOCKED = "locked"
    OUTBOX_MIN = "outbox_min"
    OUTBOX_MAX = "outbox_max"
    IN_ZONE = "in_zone"
    CLOUD_STATUS = "cloud_status"
    CLOUD_REFUSED = "cloud_refused"
    ALERTS = "alerts"
    TRIPS_MIN = "trips_min"

    @property
    def immediate(self) -> bool:
        """Whether it is judged once, on the step's answer (the others are waited for, up to `within`)."""
        return self in _IMMEDIATE


_APP_KINDS = frozenset({ExpectKind.ERROR, ExpectKind.OK, ExpectKind.STATE})
_ATTACK_KINDS = frozenset({ExpectKind.REJECTED, ExpectKind.REFUSED, ExpectKind.UNCHANGED})
_IMMEDIATE = frozenset({ExpectKind.ERROR, ExpectKind.OK, *_ATTACK_KINDS})
_MODIFIERS = {"cars", "within"}
_DETAILS = {
    "remaining_tries": ExpectKind.ERROR,
    "locked_seconds": ExpectKind.ERROR,
    "reason": ExpectKind.STATE,
    "since": ExpectKind.DELIVERED,
}


@dataclass(frozen=True, slots=True)
class Expectation:
    """One checked `expect:` entry."""

    kind: ExpectKind
    value: Any
    cars: tuple[str, ...] | None = None
    within_s: float = DEFAULT_WITHIN_S
    details: tuple[tuple[str, Any], ...] = ()

    def describe(self) -> str:
        """`state timed_out`, `error SPIN_INCORRECT (remaining_tries 2)`, `online false for leon[0]`."""
        value = self.value
        if isinstance(value, bool):
            value = str(value).lower()
        elif isinstance(value, Mapping):
            value = ", ".join(f"{k}={_show(v)}" for k, v in value.items())
        elif value is None:
            value = "none"
        text = f"{self.kind.value} {value}"
        if self.details:
            shown = [(k, format_duration(v) if k == "since" else v) for k, v in self.details]
            text += " (" + ", ".join(f"{k} {v}" for k, v in shown) + ")"
        if self.cars:
            text += f" for {', '.join(self.cars)}"
        return text


def _show(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def parse_expectation(raw: Any, action: ScenarioAction, *, attack_on_car: bool | None = None) -> Expectation:
    """Check one `expect:` entry of a step doing `action`; FaultSpecError naming the key and the problem.
    `attack_on_car` (attack steps) tells whether `rejected` (a car) or `refused` (the cloud) applies."""
    if not isinstance(raw, Mapping):
        raise FaultSpecError(f"an expectation is a mapping like {{state: timed_out}}, not {type(raw).__name__}")
    keys = [k for k in raw if k not in _MODIFIERS and k not in _DETAILS]
    if len(keys) != 1:
        kinds = ", ".join(k.value for k in ExpectKind)
        found = ", ".join(map(str, keys)) or "none"
        raise FaultSpecError(f"needs exactly one of: {kinds} (found: {found})")
    key = str(keys[0])
    try:
        kind = ExpectKind(key)
    except ValueError:
        raise FaultSpecError(f"{key}: unknown expectation; one of {', '.join(k.value for k in ExpectKind)}") from None
    if kind in _APP_KINDS and action is not ScenarioAction.APP:
        raise FaultSpecError(f"{key}: judges an app request; put it on an app step, not {action.value}")
    if kind in _ATTACK_KINDS and action is not ScenarioAction.ATTACK:
        raise FaultSpecError(f"{key}: judges an attack; put it on an attack step, not {action.value}")
    if kind is ExpectKind.REJECTED and attack_on_car is False:
        raise FaultSpecError("rejected: this attack is on the cloud; expect `refused: <reason>`")
    if kind is ExpectKind.REFUSED and attack_on_car is True:
        raise FaultSpecError("refused: this attack is on a car; expect `rejected: <reason>`")
    value = _value(kind, raw[key])
    details: list[tuple[str, Any]] = []
    for name in sorted(_DETAILS.keys() & set(raw)):
        if kind is not _DETAILS[name]:
            raise FaultSpecError(f"{name}: only a `{_DETAILS[name].value}` expectation has it")
        detail = raw[name]
        if name == "reason":
            if not isinstance(detail, str) or not detail:
                raise FaultSpecError("reason: a failure or rejection reason, e.g. expired or door_open")
        elif name == "since":
            try:
                detail = parse_duration(detail)
            except ValueError as exc:
                raise FaultSpecError(f"since: {exc}") from None
        elif isinstance(detail, bool) or not isinstance(detail, int) or detail < 0:
            raise FaultSpecError(f"{name}: must be a whole number >= 0")
        details.append((name, detail))
    cars = raw.get("cars")
    if cars is not None:
        cars = (cars,) if isinstance(cars, str) else cars
        if not isinstance(cars, list | tuple) or not all(isinstance(c, str) for c in cars):
            raise FaultSpecError("cars: a selector or a list of selectors")
        for text in cars:
            try:
                parse_selector(text)
            except ValueError as exc:
                raise FaultSpecError(f"cars: {exc}") from None
        cars = tuple(cars)
    within = DEFAULT_WITHIN_S
    if "within" in raw:
        try:
            within = parse_duration(raw["within"])
        except ValueError as exc:
            raise FaultSpecError(f"within: {exc}") from None
        if within <= 0:
            raise FaultSpecError("within: must be more than 0 s")
    return Expectation(kind, value, cars, within, tuple(details))


def _value(kind: ExpectKind, value: Any) -> Any:
    where = kind.value
    try:
        if kind is ExpectKind.ERROR:
            return ErrorCode(value)
        if kind is ExpectKind.STATE:
            state = CommandState(value)
        if kind is ExpectKind.REJECTED:
            return RejectReason(value)
        if kind in (ExpectKind.REFUSED, ExpectKind.CLOUD_REFUSED):
            return RefusalReason(value)
    except ValueError:
        choices = {
            ExpectKind.ERROR: ErrorCode,
            ExpectKind.STATE: CommandState,
            ExpectKind.REJECTED: RejectReason,
            ExpectKind.REFUSED: RefusalReason,
            ExpectKind.CLOUD_REFUSED: RefusalReason,
        }[kind]
        raise FaultSpecError(f"{where}: {value!r} is not one of {', '.join(m.value for m in choices)}") from None
    if kind is ExpectKind.STATE:
        if not state.is_final:
            finals = "succeeded, failed, rejected or timed_out"
            raise FaultSpecError(f"{where}: {value!r} is not final; expect {finals}")
        return state
    if kind in (ExpectKind.OK, ExpectKind.UNCHANGED, ExpectKind.DELIVERED, ExpectKind.APPLIED_ONCE):
        if value is not True:
            raise FaultSpecError(f"{where}: write `{where}: true` (the opposite is not a useful expectation)")
        return True
    if kind in (ExpectKind.ONLINE, ExpectKind.LOCKED):
        if not isinstance(value, bool):
            raise FaultSpecError(f"{where}: true or false")
        return value
    if kind is ExpectKind.ALERTS:
        if not isinstance(value, Mapping) or not value or not set(value) <= {"speed", "area"} or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in value.values()
        ):
            raise FaultSpecError(f"{where}: speed and/or area to a whole number, e.g. {{speed: 1, area: 2}}")
        return dict(value)
    if kind in (ExpectKind.OUTBOX_MIN, ExpectKind.OUTBOX_MAX, ExpectKind.TRIPS_MIN):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise FaultSpecError(f"{where}: a whole number >= 0")
        return value
    if kind is ExpectKind.IN_ZONE:
        if value is not None and not isinstance(value, str):
            raise FaultSpecError(f"{where}: a zone name, or null for none")
        return value
    if not isinstance(value, Mapping) or not value or not all(isinstance(k, str) for k in value):
        raise FaultSpecError(f"{where}: a mapping of status fields (dotted paths) to values")
    return dict(value)


def format_within(seconds: float) -> str:
    """`1m` — for reports."""
    return format_duration(seconds)
