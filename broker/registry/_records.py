"""The rows of the cloud registry, as frozen dataclasses the domain services read and write.

Hashes of secrets (password, S-PIN, session token, pairing code) are stored, never the secrets; even the
hashes stay out of `repr()` so that a record printed in a log line or a test failure gives nothing away.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from tcu_sim.protocol import CommandState

__all__ = [
    "AlertRecord",
    "AuditRecord",
    "BookingRecord",
    "CarContext",
    "CommandRecord",
    "CommandStep",
    "EnrolmentRecord",
    "EnrolmentState",
    "LicenceRecord",
    "MailRecord",
    "PairingCodeRecord",
    "PurchaseRecord",
    "RateBucket",
    "RoadsideCaseRecord",
    "Role",
    "SessionRecord",
    "SpinState",
    "StatusWrite",
    "TripRecord",
    "UserRecord",
    "VehicleRecord",
    "VehicleState",
]


class Role(StrEnum):
    """A user's role for one car (R8, R10)."""

    PRIMARY = "primary"
    SECONDARY = "secondary"


class EnrolmentState(StrEnum):
    """`pending` until the in-car step (two-key verification, pairing code) completes; then `active`."""

    PENDING = "pending"
    ACTIVE = "active"


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A CUPRA ID. `email_key` is the lower-cased address the uniqueness constraint is on."""

    id: str
    email: str
    password_hash: str = field(repr=False)
    spin_hash: str = field(repr=False)
    verified: bool
    reauth_minutes: int | None
    created_at: float

    @property
    def email_key(self) -> str:
        """The address as it is compared: case does not make a different account."""
        return email_key(self.email)


def email_key(email: str) -> str:
    """Normalised e-mail address for lookups and the unique constraint."""
    return email.strip().lower()


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A login. Only the SHA-256 of the token is stored, so a leaked database gives no usable token."""

    token_hash: str = field(repr=False)
    user_id: str
    created_at: float
    last_activity: float
    revoked_at: float | None = None


@dataclass(frozen=True, slots=True)
class VehicleRecord:
    """Factory data of a car, imported from the provisioning manifest."""

    vin: str
    model: str
    equipment: str
    registered_at: float
    group: str | None = None


@dataclass(frozen=True, slots=True)
class VehicleState:
    """What the cloud last heard from a car (its verified status and its connection)."""

    vin: str
    online: bool | None
    privacy_mode: str | None
    status: dict[str, Any] | None
    updated_at: float | None


@dataclass(frozen=True, slots=True)
class EnrolmentRecord:
    """A user's link to a car: role, and whether the in-car step is still pending."""

    vin: str
    user_id: str
    role: Role
    state: EnrolmentState
    method: str
    created_at: float
    activated_at: float | None = None


@dataclass(frozen=True, slots=True)
class CarContext:
    """Everything an access check needs about one car and one user, read in one query: the car, the user's
    enrolment for it, its licence, and its last reported connection and privacy level."""

    vehicle: VehicleRecord
    enrolment: EnrolmentRecord | None
    licence: LicenceRecord | None
    online: bool | None
    privacy_mode: str | None


@dataclass(frozen=True, slots=True)
class PairingCodeRecord:
    """An 8-digit pairing code, stored as a keyed hash; voided when the car is removed or re-added (R6)."""

    id: int | None
    vin: str
    user_id: str
    code_hash: str = field(repr=False)
    created_at: float
    expires_at: float
    voided_at: float | None = None
    used_at: float | None = None


@dataclass(frozen=True, slots=True)
class SpinState:
    """Consecutive wrong S-PINs of one user, and the lock they caused (R3)."""

    user_id: str
    failures: int = 0
    locked_until: float | None = None
    lock_count: int = 0


@dataclass(frozen=True, slots=True)
class RateBucket:
    """A token bucket: `tokens` left at `updated_at`."""

    key: str
    tokens: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class LicenceRecord:
    """The service term of a car (R14, R16): it belongs to the VIN, not to a user."""

    vin: str
    starts_at: float
    ends_at: float


@dataclass(frozen=True, slots=True)
class PurchaseRecord:
    """A paid renewal: it extended the licence from `starts_at` to `ends_at`; refundable 14 days (R15)."""

    id: int | None
    vin: str
    user_id: str
    years: int
    activated_at: float
    starts_at: float
    ends_at: float
    refunded_at: float | None = None


@dataclass(frozen=True, slots=True)
class CommandStep:
    """One entry of a command's history."""

    state: CommandState
    at: float
    reason: str | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class CommandRecord:
    """A command an app asked for, and where it is in its lifecycle (SPEC §2.3)."""

    id: str
    user_id: str
    request_id: str
    vin: str
    op: str
    params: dict[str, Any]
    state: CommandState
    created_at: float
    expires_at: float
    updated_at: float
    reason: str | None = None
    detail: str | None = None
    #: The app client (MQTT client id) that asked for it: its progress is pushed there, by whichever cloud
    #: process applies the next step (None for commands stored before this was kept).
    client_id: str | None = None


@dataclass(frozen=True, slots=True)
class StatusWrite:
    """A car's verified status, to be applied with its `seq` claim on `stream` (`Registry.apply_statuses`)."""

    stream: str
    seq: int
    vin: str
    #: The snapshot as JSON text (encoded once, by whoever validated it).
    status_json: str = field(repr=False)
    privacy_mode: str
    updated_at: float


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """A security-relevant action. `detail` holds names and outcomes, never a secret."""

    at: float
    action: str
    outcome: str
    user_id: str | None = None
    vin: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    id: int | None = None


@dataclass(frozen=True, slots=True)
class MailRecord:
    """An e-mail of the simulated mailbox."""

    at: float
    to: str
    subject: str
    body: str = field(repr=False)
    user_id: str | None = None
    id: int | None = None


@dataclass(frozen=True, slots=True)
class TripRecord:
    """A trip a car reported (driving data): the verified `trip` body as JSON, and when it reached the cloud."""

    id: int | None
    vin: str
    started_at: float
    ended_at: float
    trip: dict[str, Any]
    received_at: float


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """A speed or area alert of one user for one car: `kind` (`speed` | `area`), its `settings`, and the
    `state` the cloud keeps between trips (e.g. whether the car was last inside the area)."""

    vin: str
    user_id: str
    kind: str
    settings: dict[str, Any]
    state: dict[str, Any]
    updated_at: float


@dataclass(frozen=True, slots=True)
class BookingRecord:
    """A service appointment booked for a car: `state` is `booked` or `cancelled`."""

    id: str
    vin: str
    user_id: str
    date: str
    workshop: str
    reason: str | None
    state: str
    created_at: float
    cancelled_at: float | None = None


@dataclass(frozen=True, slots=True)
class RoadsideCaseRecord:
    """A roadside-assistance case opened by a breakdown call from the car; `position` is None when the car's
    privacy hid it."""

    id: str
    vin: str
    opened_at: float
    state: str
    position: dict[str, float] | None
    detail: str | None = None
