"""The typed events of cloud and fleet (SPEC §8): what happened, never a secret.

Every event is a frozen dataclass with the publisher's clock time `at` (virtual in tests) and its `source`.
Events carry identifiers and outcomes only: a VIN, a command id, a state, a reason code; never a token, a
password, an S-PIN or a message body that could hold one (a car message's signed token is public: it is
what travelled over the broker, and it is verified, not secret).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar

__all__ = [
    "AlertFired",
    "AppRequestRefused",
    "BrokerAction",
    "CarCommandHandled",
    "CarConnectFailed",
    "CarConnection",
    "CarControlHandled",
    "CarMessageHandled",
    "CloudConnection",
    "CommandChanged",
    "Event",
    "FaultChanged",
    "RoadsideCaseOpened",
    "Source",
]


class Source(StrEnum):
    """Who reports an event."""

    CLOUD = "cloud"
    FLEET = "fleet"
    FAULTS = "faults"
    BROKER = "broker"


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of every event: `at` (the publisher's clock), `source`."""

    kind: ClassVar[str] = "event"
    at: float
    source: Source


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandChanged(Event):
    """An app command entered a state of its lifecycle (`queued` on creation, then each step, `timed_out` on
    expiry). `state` is the `CommandState` value."""

    kind: ClassVar[str] = "command"
    command_id: str
    vin: str
    op: str
    state: str
    user_id: str
    reason: str | None = None
    detail: str | None = None
    created_at: float = 0.0
    expires_at: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class CarMessageHandled(Event):
    """The cloud applied a car message, or refused it (`reason`: a `RefusalReason` value) and changed nothing.

    `topic_kind` is `status`, `events`, `results` or `connection`; `seq` the message's sequence number when it
    was read; `token` the payload as it came from the broker (a signed token, or `online`/`offline`)."""

    kind: ClassVar[str] = "car_message"
    vin: str
    topic_kind: str
    applied: bool
    seq: int | None = None
    reason: str | None = None
    token: bytes = field(default=b"", repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class CarConnection(Event):
    """A car came online or went offline: as the cloud learnt it (`source=cloud`, from `tcu/{vin}/connection`)
    or as the car itself saw it (`source=fleet`, with the disconnect `reason`)."""

    kind: ClassVar[str] = "car_connection"
    vin: str
    online: bool
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CarConnectFailed(Event):
    """A car's connection attempt failed (`error`: no TCP/TLS connection, no CONNACK in time, closed or refused
    by the broker); it tries again after its backoff (`attempt` counts from 0)."""

    kind: ClassVar[str] = "car_connect_failed"
    vin: str
    error: str
    attempt: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CarCommandHandled(Event):
    """A car executed a signed command (`outcome`: `succeeded` or `failed`) or rejected it (`rejected`, with
    the `RejectReason` value as `reason`)."""

    kind: ClassVar[str] = "car_command"
    vin: str
    command_id: str
    op: str | None
    outcome: str
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CarControlHandled(Event):
    """A car applied an operator control (`sim/{vin}/control`), or refused it with `error`."""

    kind: ClassVar[str] = "car_control"
    vin: str
    action: str
    ok: bool
    error: str | None = None
    control_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AppRequestRefused(Event):
    """The cloud answered an app request with an error `code` (SPEC §2.5)."""

    kind: ClassVar[str] = "app_refused"
    client_id: str
    op: str
    code: str
    request_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CloudConnection(Event):
    """The cloud's own MQTT connection came up or was lost (`error`: why)."""

    kind: ClassVar[str] = "cloud_connection"
    connected: bool
    error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultChanged(Event):
    """A fault was applied (`active=True`) or cleared on `target` (a VIN, a group, `fleet`, `proxy`)."""

    kind: ClassVar[str] = "fault"
    target: str
    fault: str
    active: bool
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerAction(Event):
    """The broker a run started was stopped, killed, started or restarted."""

    kind: ClassVar[str] = "broker"
    action: str
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertFired(Event):
    """A speed or area alert of a car fired for its primary user (`alert`: `speed` | `area`), pushed and mailed.

    `detail` says what happened in words an operator reads (`142 km/h > 120 km/h`, `left the area`); no position
    (the user's area is theirs to know)."""

    kind: ClassVar[str] = "alert"
    vin: str
    user_id: str
    alert: str
    fired_at: float
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class RoadsideCaseOpened(Event):
    """A breakdown call from a car opened a roadside-assistance case (`case_id`), or was refused (`case_id`
    None: services not active)."""

    kind: ClassVar[str] = "roadside"
    vin: str
    case_id: str | None
    with_position: bool = False
