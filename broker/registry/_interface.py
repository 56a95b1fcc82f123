"""The registry interface the cloud's domain services are written against, and its errors.

Every method is one atomic step: it either happens completely or not at all, also when several cloud
processes share one PostgreSQL. Read-modify-write steps whose rule belongs to the domain (S-PIN lockout, rate
limit, licence renewal) take a pure `change` function that the registry runs on the locked row inside its
transaction; an exception raised by `change` rolls the step back and propagates unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tcu_sim.protocol import CommandState

from ._records import (
    AlertRecord,
    AuditRecord,
    BookingRecord,
    CarContext,
    CommandRecord,
    CommandStep,
    EnrolmentRecord,
    LicenceRecord,
    MailRecord,
    PairingCodeRecord,
    PurchaseRecord,
    RateBucket,
    RoadsideCaseRecord,
    SessionRecord,
    SpinState,
    StatusWrite,
    TripRecord,
    UserRecord,
    VehicleRecord,
    VehicleState,
)
from ._seqwindow import SeqMark

__all__ = ["LicenceChange", "Registry", "RegistryConflict", "RegistryError", "RegistryUnavailable"]


class RegistryError(Exception):
    """Root of the registry's errors; library errors are translated into these at the boundary."""


class RegistryConflict(RegistryError):
    """A uniqueness rule of the store refused the write (e.g. a second active primary user for one car)."""


class RegistryUnavailable(RegistryError):
    """The store cannot be reached or opened."""


@dataclass(frozen=True, slots=True)
class LicenceChange:
    """What `Registry.update_licence`'s change function decided: the licence to write, a purchase to add,
    a purchase to mark refunded. The registry hands it back with the new purchase's id filled in."""

    licence: LicenceRecord
    new_purchase: PurchaseRecord | None = None
    refund_purchase_id: int | None = None
    refunded_at: float | None = None


class Registry(Protocol):
    """The cloud's store: accounts, sessions, cars, enrolments, S-PIN, licences, commands, audit, mail."""

    @property
    def dialect(self) -> str:
        """`sqlite` or `postgresql`."""
        ...

    # -- accounts --------------------------------------------------------------------------------------------
    async def create_user(self, user: UserRecord) -> bool:
        """Insert a user; False (nothing written) when the e-mail, compared case-insensitively, is taken."""
        ...

    async def get_user(self, user_id: str) -> UserRecord | None:
        """The user with this id."""
        ...

    async def get_user_by_email(self, email: str) -> UserRecord | None:
        """The user with this e-mail address, whatever its case."""
        ...

    async def set_user_verified(self, user_id: str) -> None:
        """Mark the user's e-mail address as verified (R1)."""
        ...

    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        """Replace the password hash."""
        ...

    async def set_spin_hash(self, user_id: str, spin_hash: str) -> None:
        """Replace the S-PIN's keyed hash."""
        ...

    async def set_reauth_minutes(self, user_id: str, minutes: int | None) -> None:
        """Idle minutes after which the app must ask for the password again (R17); None: never."""
        ...

    async def add_email_code(
        self, code_hash: str, user_id: str, created_at: float, expires_at: float
    ) -> None:
        """Store a verification code (hashed)."""
        ...

    async def use_email_code(self, code_hash: str, now: float) -> str | None:
        """Consume an unused, unexpired code; the user id it was for, or None. A code works once."""
        ...

    # -- sessions --------------------------------------------------------------------------------------------
    async def create_session(self, session: SessionRecord) -> None:
        """Store a new session."""
        ...

    async def get_session(self, token_hash: str) -> SessionRecord | None:
        """The session with this token hash (revoked ones included: the caller decides)."""
        ...

    async def get_session_user(self, token_hash: str) -> tuple[SessionRecord, UserRecord] | None:
        """The session with this token hash and its user, in one read (every app request needs both)."""
        ...

    async def touch_session(self, token_hash: str, at: float) -> None:
        """Record activity on a session (never moves `last_activity` back)."""
        ...

    async def revoke_session(self, token_hash: str, at: float) -> bool:
        """Revoke one session; False when it was unknown or already revoked."""
        ...

    async def revoke_user_sessions(self, user_id: str, at: float, *, keep: str | None = None) -> int:
        """Revoke every live session of a user except the one whose hash is `keep`; how many were revoked."""
        ...

    # -- vehicles --------------------------------------------------------------------------------------------
    async def upsert_vehicles(self, vehicles: Sequence[VehicleRecord]) -> None:
        """Insert or update factory data (the provisioning manifest may be imported again)."""
        ...

    async def get_vehicle(self, vin: str) -> VehicleRecord | None:
        """Factory data of a car."""
        ...

    async def record_status(
        self, vin: str, status: dict[str, Any], privacy_mode: str, updated_at: float
    ) -> bool:
        """Keep a car's verified status; one older (`updated_at`) than the stored one is ignored (False)."""
        ...

    async def record_privacy(self, vin: str, privacy_mode: str, at: float) -> bool:
        """Keep a privacy change the car announced at `at` (an event); ignored (False) when the stored status
        is newer."""
        ...

    async def set_vehicle_online(self, vin: str, online: bool) -> None:
        """Keep the car's connection state (`tcu/{vin}/connection`)."""
        ...

    async def get_vehicle_state(self, vin: str) -> VehicleState | None:
        """What the cloud last heard from the car."""
        ...

    async def get_car_context(self, vin: str, user_id: str) -> CarContext | None:
        """The car with this user's enrolment, its licence and its last connection and privacy level, in one
        read; None when the car does not exist."""
        ...

    # -- enrolments ------------------------------------------------------------------------------------------
    async def get_enrolment(self, vin: str, user_id: str) -> EnrolmentRecord | None:
        """The user's enrolment for the car."""
        ...

    async def list_user_enrolments(self, user_id: str) -> list[EnrolmentRecord]:
        """The user's garage (pending and active), oldest first."""
        ...

    async def list_vehicle_enrolments(self, vin: str) -> list[EnrolmentRecord]:
        """Every user linked to the car, oldest first."""
        ...

    async def count_user_enrolments(self, user_id: str) -> int:
        """How many cars occupy the user's garage (R9)."""
        ...

    async def put_enrolment(self, enrolment: EnrolmentRecord) -> None:
        """Insert or replace the (vin, user) enrolment."""
        ...

    async def delete_enrolments(
        self, vin: str, at: float, user_ids: Collection[str] | None = None
    ) -> list[EnrolmentRecord]:
        """Remove these users' enrolments (all users' if None) for the car and void their pairing codes."""
        ...

    async def make_primary(self, vin: str, user_id: str, method: str, at: float) -> list[EnrolmentRecord]:
        """Make the user the car's one active primary user (R8). Everyone else active on the car (the old
        primary and the secondary users they nominated) is removed and returned; the user's pairing codes are
        used up."""
        ...

    # -- pairing codes ---------------------------------------------------------------------------------------
    async def add_pairing_code(self, code: PairingCodeRecord) -> PairingCodeRecord:
        """Store a new code for (vin, user), voiding that user's earlier codes for the car (R6)."""
        ...

    async def find_pairing_code(self, vin: str, code_hash: str) -> PairingCodeRecord | None:
        """The newest code for the car with this hash, whatever its state (the caller checks it)."""
        ...

    # -- S-PIN and rate limits -------------------------------------------------------------------------------
    async def get_spin_state(self, user_id: str) -> SpinState:
        """The user's S-PIN failure state (all zero when none is stored)."""
        ...

    async def update_spin_state(self, user_id: str, change: Callable[[SpinState], SpinState]) -> SpinState:
        """Atomically replace the S-PIN state by `change(current)` under a row lock; the new state."""
        ...

    async def update_rate_bucket(
        self, key: str, change: Callable[[RateBucket | None], RateBucket]
    ) -> RateBucket:
        """Atomically replace the bucket by `change(current)` under a row lock; the new bucket."""
        ...

    # -- licences --------------------------------------------------------------------------------------------
    async def ensure_licence(self, licence: LicenceRecord) -> bool:
        """Insert the licence unless the car already has one; True when inserted."""
        ...

    async def get_licence(self, vin: str) -> LicenceRecord | None:
        """The car's licence."""
        ...

    async def list_purchases(self, vin: str) -> list[PurchaseRecord]:
        """The car's purchases, oldest first."""
        ...

    async def update_licence(
        self, vin: str, change: Callable[[LicenceRecord | None, list[PurchaseRecord]], LicenceChange]
    ) -> LicenceChange:
        """Atomically apply `change(licence, purchases)` under a row lock: write the licence, add the
        purchase, mark the refund. `change` may raise to refuse."""
        ...

    async def licences_ending_between(self, after: float, until: float) -> list[LicenceRecord]:
        """Licences with `after < ends_at <= until`."""
        ...

    async def record_reminder(
        self, vin: str, ends_at: float, stage: str, at: float, mail: MailRecord | None
    ) -> bool:
        """Record that the reminder `stage` for this term was handled and deliver `mail` with it, once: False
        (and no mail) when it had been recorded already, by this process or another."""
        ...

    # -- commands --------------------------------------------------------------------------------------------
    async def create_command(self, command: CommandRecord) -> tuple[CommandRecord, bool]:
        """Insert a command unless one with the same (user, request id) exists: (the command, created?)."""
        ...

    async def get_command(self, command_id: str) -> CommandRecord | None:
        """The command with this id."""
        ...

    async def find_command(self, user_id: str, request_id: str) -> CommandRecord | None:
        """The command a user's request id created."""
        ...

    async def transition_command(
        self,
        command_id: str,
        state: CommandState,
        at: float,
        *,
        allowed_from: Collection[CommandState],
        reason: str | None = None,
        detail: str | None = None,
    ) -> CommandRecord | None:
        """Move the command to `state` if it is in one of `allowed_from` (atomic compare-and-set), adding a
        history entry; None when it was not (unknown command, or a state it may not leave that way)."""
        ...

    async def expire_commands(self, now: float) -> list[CommandRecord]:
        """Move every unfinished command whose TTL has passed to `timed_out`; the commands moved."""
        ...

    async def command_history(self, command_id: str) -> list[CommandStep]:
        """The command's states in order."""
        ...

    # -- audit, mail, counters -------------------------------------------------------------------------------
    async def add_audit(self, entry: AuditRecord) -> None:
        """Append to the audit log."""
        ...

    async def list_audit(
        self, *, limit: int = 100, user_id: str | None = None, vin: str | None = None
    ) -> list[AuditRecord]:
        """The newest `limit` audit entries (optionally of one user or car), oldest first."""
        ...

    async def add_mail(self, mail: MailRecord) -> MailRecord:
        """Deliver a mail to the simulated mailbox; the mail as stored (with its id)."""
        ...

    async def list_mail(self, email: str) -> list[MailRecord]:
        """Every mail sent to this address (any case), oldest first."""
        ...

    async def next_counter(self, name: str) -> int:
        """Atomically increment a named counter (from 1) and return it (e.g. the cloud's `seq` per VIN)."""
        ...

    # -- anti-replay windows (see `SeqMark`) and car statuses ------------------------------------------------
    async def claim_seq(self, stream: str, seq: int) -> bool:
        """Atomically mark `seq` seen on `stream` in its anti-replay window; False (nothing changed) when it was
        seen before or is older than the window (a duplicate or a replay, also when another cloud process
        claimed it first)."""
        ...

    async def release_seq(self, stream: str, seq: int) -> None:
        """Undo a claim whose message could not be applied, so that its redelivery is accepted."""
        ...

    async def seq_mark(self, stream: str) -> SeqMark | None:
        """The stream's window (None before its first claim)."""
        ...

    async def apply_statuses(self, statuses: Sequence[StatusWrite]) -> list[bool]:
        """Claim each status's `seq` on its stream, in order, and keep the newest accepted status of each car —
        all in ONE transaction: it happens completely or not at all. Per status, whether its seq was accepted
        (False: a duplicate or a replay, not applied). A status older (`updated_at`) than the stored one is
        accepted but does not replace it; one of a car without factory data is accepted and not stored."""
        ...

    # -- car services: trips, alerts, bookings, roadside cases -----------------------------------------------
    async def add_trip(self, trip: TripRecord) -> TripRecord:
        """Keep a trip a car reported; the trip as stored (with its id)."""
        ...

    async def list_trips(self, vin: str, *, since: float | None = None, limit: int = 50) -> list[TripRecord]:
        """The car's trips that started at or after `since`, newest first, at most `limit`."""
        ...

    async def put_alert(self, alert: AlertRecord) -> None:
        """Insert or replace the (vin, user, kind) alert."""
        ...

    async def list_alerts(self, vin: str, user_id: str | None = None) -> list[AlertRecord]:
        """The car's alerts (of one user when given), by user and kind."""
        ...

    async def delete_alert(self, vin: str, user_id: str, kind: str) -> bool:
        """Remove the alert; False when there was none."""
        ...

    async def set_alert_state(self, vin: str, user_id: str, kind: str, state: dict[str, Any], at: float) -> None:
        """Replace what the cloud remembers of the alert between trips (nothing when the alert is gone)."""
        ...

    async def add_booking(self, booking: BookingRecord) -> None:
        """Store a service appointment."""
        ...

    async def list_bookings(self, vin: str) -> list[BookingRecord]:
        """The car's service appointments, oldest booked first."""
        ...

    async def cancel_booking(self, vin: str, booking_id: str, at: float) -> BookingRecord | None:
        """Cancel a booked appointment of the car; None when there is no such booked appointment."""
        ...

    async def add_roadside_case(self, case: RoadsideCaseRecord) -> None:
        """Store a roadside-assistance case."""
        ...

    async def list_roadside_cases(self, vin: str, *, limit: int = 20) -> list[RoadsideCaseRecord]:
        """The car's roadside-assistance cases, newest first."""
        ...

    # -- app clients -----------------------------------------------------------------------------------------
    async def bind_client(self, user_id: str, client_id: str, at: float, *, keep: int = 8) -> None:
        """The user was seen on app client `client_id` at `at`; only the `keep` most recent clients are kept."""
        ...

    async def list_clients(self, user_id: str, *, limit: int = 8) -> list[str]:
        """The app clients the user was seen on, most recent first."""
        ...
