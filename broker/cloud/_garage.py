"""The garage: adding cars and completing their enrolment, primary and secondary users, factory reset.

R5: a car is added by VIN with the terms accepted; its model and equipment decide how the owner proves they
have it — Two Key Owner Verification in the car, or an 8-digit pairing code entered in the infotainment.
R6: a pairing code is valid for a year, the car must be online to accept it, and adding the car again voids
the old code. R7: logging in with the CUPRA ID in the car's infotainment enrols it too. R8: when enrolment
completes the user is the car's one primary user; an earlier primary is replaced and told by mail. R9: 50 cars
per garage. R10: the primary user nominates secondary users. R16: a factory reset removes the car from every
account (its licence stays with the car).

The in-car steps arrive as the car's signed events; the MQTT handler verifies them and calls the
`complete_by_*` and `factory_reset` methods, then shows the returned confirmation in the infotainment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from broker.registry import (
    EnrolmentRecord,
    EnrolmentState,
    PairingCodeRecord,
    RegistryConflict,
    Role,
    UserRecord,
    VehicleRecord,
)
from tcu_sim.protocol import EnrolmentMethod, is_valid_vin

from ._access import AccessControl
from ._accounts import AccountService
from ._context import ServiceContext
from ._errors import (
    GarageFull,
    InvalidRequest,
    PairingCodeExpired,
    PairingCodeInvalid,
    TermsNotAccepted,
    Unauthenticated,
    UnsupportedByVehicle,
    UserNotVerified,
    VehicleNotFound,
    VehicleOffline,
)
from ._rights import Right
from ._security import add_years, new_pairing_code
from ._vehicles import vehicle_capabilities

__all__ = [
    "INFOTAINMENT_LOGIN",
    "INVITATION",
    "AddVehicleResult",
    "EnrolmentOutcome",
    "GarageEntry",
    "GarageService",
]

#: Enrolment methods besides the catalogue's `EnrolmentMethod`s: in-car login (R7), nomination by the primary.
INFOTAINMENT_LOGIN = "infotainment_login"
INVITATION = "invitation"

PRIMARY_CONFIRMATION = "You are now the primary user of this vehicle."


@dataclass(frozen=True, slots=True)
class AddVehicleResult:
    """How to complete adding a car: two-key verification in the car, or this pairing code."""

    vin: str
    method: EnrolmentMethod
    pairing_code: str | None = field(default=None, repr=False)
    expires_at: float | None = None

    def as_result(self) -> dict[str, Any]:
        """The `result` of the app's `add_vehicle` response."""
        out: dict[str, Any] = {"vin": self.vin, "method": self.method.value}
        if self.pairing_code is not None:
            out["pairing_code"] = self.pairing_code
            out["expires_at"] = self.expires_at
        return out


@dataclass(frozen=True, slots=True)
class GarageEntry:
    """One car of a user's garage."""

    vin: str
    model: str
    equipment: str
    role: Role
    state: EnrolmentState
    method: str

    def as_result(self) -> dict[str, Any]:
        """An entry of the app's `list_vehicles` result."""
        return {
            "vin": self.vin, "model": self.model, "equipment": self.equipment, "role": self.role.value,
            "state": self.state.value, "method": self.method,
        }


@dataclass(frozen=True, slots=True)
class EnrolmentOutcome:
    """A completed enrolment: the new primary user, whom they replaced, and what the infotainment shows."""

    vin: str
    user_id: str
    email: str
    method: str
    previous_primary: str | None
    removed: tuple[EnrolmentRecord, ...] = ()
    confirmation: str = PRIMARY_CONFIRMATION


class GarageService:
    """Garage and enrolment (R5-R10, R16)."""

    def __init__(self, ctx: ServiceContext, accounts: AccountService, access: AccessControl) -> None:
        self._ctx = ctx
        self._reg = ctx.registry
        self._accounts = accounts
        self._access = access

    def __repr__(self) -> str:
        return f"GarageService({self._reg!r}, limit={self._ctx.config.garage_limit})"

    # -- from the app ----------------------------------------------------------------------------------------
    async def add_vehicle(self, token: str | None, vin: str, accept_terms: bool) -> AddVehicleResult:
        """Start adding a car (R5): terms accepted, user verified, car known, room in the garage. The car is
        pending until the in-car step; a pairing code replaces (voids) any earlier one of the user (R6)."""
        me = await self._accounts.authenticate(token)
        if accept_terms is not True:
            raise TermsNotAccepted()
        if not me.user.verified:
            raise UserNotVerified()
        vehicle = await self._known_vehicle(vin)
        mine = await self._reg.get_enrolment(vehicle.vin, me.user_id)
        if mine is not None and mine.state is EnrolmentState.ACTIVE:
            raise InvalidRequest("This car is already in your garage.")
        await self._check_room(me.user_id, already_counted=mine is not None)
        method = vehicle_capabilities(vehicle).enrolment_method
        now = self._ctx.now()
        await self._reg.put_enrolment(
            EnrolmentRecord(
                vin=vehicle.vin, user_id=me.user_id, role=Role.PRIMARY, state=EnrolmentState.PENDING,
                method=method.value, created_at=now,
            )
        )
        await self._ctx.audit("enrolment.started", user_id=me.user_id, vin=vehicle.vin, method=method.value)
        if method is not EnrolmentMethod.PAIRING_CODE:
            return AddVehicleResult(vin=vehicle.vin, method=method)
        code = new_pairing_code()
        expires_at = add_years(now, self._ctx.config.pairing_code_years)
        await self._reg.add_pairing_code(
            PairingCodeRecord(
                id=None, vin=vehicle.vin, user_id=me.user_id,
                code_hash=self._ctx.secret.pairing_hash(vehicle.vin, code), created_at=now, expires_at=expires_at,
            )
        )
        return AddVehicleResult(vin=vehicle.vin, method=method, pairing_code=code, expires_at=expires_at)

    async def remove_vehicle(self, token: str | None, vin: str) -> None:
        """Take a car out of the user's garage (pending ones too, voiding their pairing code, R6). When the
        primary user removes it, the secondary users they nominated lose it as well."""
        me = await self._accounts.authenticate(token)
        if not isinstance(vin, str) or not is_valid_vin(vin):
            raise VehicleNotFound()
        mine = await self._reg.get_enrolment(vin, me.user_id)
        if mine is None:
            raise VehicleNotFound()
        user_ids = [me.user_id]
        if mine.role is Role.PRIMARY and mine.state is EnrolmentState.ACTIVE:
            user_ids += [
                e.user_id for e in await self._reg.list_vehicle_enrolments(vin) if e.role is Role.SECONDARY
            ]
        removed = await self._reg.delete_enrolments(vin, self._ctx.now(), user_ids)
        await self._ctx.audit("enrolment.removed", user_id=me.user_id, vin=vin, users_removed=len(removed))
        others = [e for e in removed if e.user_id != me.user_id]
        await self._tell_removed(others, vin, "was removed by its primary user")

    async def list_vehicles(self, token: str | None) -> list[GarageEntry]:
        """The user's garage: active and pending cars, oldest first."""
        me = await self._accounts.authenticate(token)
        out: list[GarageEntry] = []
        for e in await self._reg.list_user_enrolments(me.user_id):
            v = await self._reg.get_vehicle(e.vin)
            if v is not None:
                out.append(GarageEntry(e.vin, v.model, v.equipment, e.role, e.state, e.method))
        return out

    async def list_users(self, token: str | None, vin: str) -> list[dict[str, str]]:
        """The car's users (e-mail, role, state), for its primary user."""
        await self._access.vehicle(token, vin, Right.MANAGE_USERS)
        out: list[dict[str, str]] = []
        for e in await self._reg.list_vehicle_enrolments(vin):
            user = await self._reg.get_user(e.user_id)
            if user is not None and e.state is EnrolmentState.ACTIVE:
                out.append({"email": user.email, "role": e.role.value, "state": e.state.value})
        return out

    async def invite_secondary(self, token: str | None, vin: str, email: str) -> None:
        """The primary user nominates a secondary user (R10). The reply is the same whether or not the
        address has a verified CUPRA ID; an address without one gets an invitation to register."""
        access = await self._access.vehicle(token, vin, Right.MANAGE_USERS)
        if not isinstance(email, str) or "@" not in email:
            raise InvalidRequest("Please enter the e-mail address of the person to invite.")
        invitee = await self._reg.get_user_by_email(email)
        if invitee is not None and invitee.id == access.principal.user_id:
            raise InvalidRequest("You are the primary user of this car already.")
        if invitee is None or not invitee.verified:
            await self._ctx.mail(
                email, "You were invited to use a CUPRA",
                "A CUPRA owner invited you as a secondary user of their car. Create and verify a CUPRA ID with "
                "this address in the My CUPRA app, then ask them to invite you again.",
            )
            await self._ctx.audit("secondary.invited", "pending", user_id=access.principal.user_id, vin=access.vin)
            return
        current = await self._reg.get_enrolment(access.vin, invitee.id)
        if current is None or current.state is not EnrolmentState.ACTIVE:
            await self._check_room(invitee.id, already_counted=current is not None)
            now = self._ctx.now()
            await self._reg.put_enrolment(
                EnrolmentRecord(
                    vin=access.vin, user_id=invitee.id, role=Role.SECONDARY, state=EnrolmentState.ACTIVE,
                    method=INVITATION, created_at=now, activated_at=now,
                )
            )
        await self._ctx.mail(
            invitee.email, "A CUPRA was added to your garage",
            f"You are now a secondary user of the CUPRA with VIN {access.vin}.", user_id=invitee.id,
        )
        await self._ctx.audit(
            "secondary.invited", user_id=access.principal.user_id, vin=access.vin, secondary=invitee.id
        )

    async def remove_secondary(self, token: str | None, vin: str, email: str) -> None:
        """The primary user removes a secondary user."""
        access = await self._access.vehicle(token, vin, Right.MANAGE_USERS)
        user = await self._reg.get_user_by_email(email) if isinstance(email, str) else None
        current = None if user is None else await self._reg.get_enrolment(access.vin, user.id)
        if user is None or current is None or current.role is not Role.SECONDARY:
            raise InvalidRequest("This person is not a secondary user of this car.")
        await self._reg.delete_enrolments(access.vin, self._ctx.now(), [user.id])
        await self._ctx.audit("secondary.removed", user_id=access.principal.user_id, vin=access.vin, secondary=user.id)
        await self._tell_removed([current], access.vin, "was removed from your garage by its primary user")

    # -- from the car (verified events) ----------------------------------------------------------------------
    async def complete_by_pairing_code(self, vin: str, code: str) -> EnrolmentOutcome:
        """A pairing code was entered in the car's infotainment (R5, R6): the car must be online, the code
        issued for this car, not voided by a later add or a removal, and younger than a year."""
        vehicle = await self._known_vehicle(vin)
        state = await self._reg.get_vehicle_state(vehicle.vin)
        if state is not None and state.online is False:
            raise VehicleOffline()
        if not isinstance(code, str) or len(code) != 8 or not code.isdigit():
            await self._ctx.audit("enrolment.pairing_code", "refused", vin=vehicle.vin)
            raise PairingCodeInvalid()
        record = await self._reg.find_pairing_code(vehicle.vin, self._ctx.secret.pairing_hash(vehicle.vin, code))
        pending = None if record is None else await self._reg.get_enrolment(vehicle.vin, record.user_id)
        if (
            record is None or record.voided_at is not None or record.used_at is not None
            or pending is None or pending.state is not EnrolmentState.PENDING
        ):
            await self._ctx.audit("enrolment.pairing_code", "refused", vin=vehicle.vin)
            raise PairingCodeInvalid()
        if self._ctx.now() >= record.expires_at:
            await self._ctx.audit("enrolment.pairing_code", "expired", user_id=record.user_id, vin=vehicle.vin)
            raise PairingCodeExpired()
        user = await self._verified_user(record.user_id)
        return await self._complete(vehicle, user, EnrolmentMethod.PAIRING_CODE.value)

    async def complete_by_tkov(self, vin: str, email: str | None = None) -> EnrolmentOutcome:
        """Two Key Owner Verification was done in the car (R5): the user who asked to add the car (the one
        named by `email`, else the latest pending request) becomes primary."""
        vehicle = await self._known_vehicle(vin)
        pending = [
            e for e in await self._reg.list_vehicle_enrolments(vehicle.vin)
            if e.state is EnrolmentState.PENDING and e.method == EnrolmentMethod.TKOV.value
        ]
        if email is not None:
            named = await self._reg.get_user_by_email(email)
            pending = [e for e in pending if named is not None and e.user_id == named.id]
        if not pending:
            await self._ctx.audit("enrolment.tkov", "refused", vin=vehicle.vin)
            raise InvalidRequest("Nobody asked to add this car: add it in the app first.")
        latest = max(pending, key=lambda e: e.created_at)
        return await self._complete(vehicle, await self._verified_user(latest.user_id), EnrolmentMethod.TKOV.value)

    async def complete_by_infotainment_login(self, vin: str, email: str, password: str) -> EnrolmentOutcome:
        """Somebody logged in with their CUPRA ID in the car's infotainment ("add user", R7): the car appears
        in their garage, with them as primary user (R8)."""
        vehicle = await self._known_vehicle(vin)
        if not vehicle_capabilities(vehicle).infotainment_login:
            raise UnsupportedByVehicle("This car's infotainment has no CUPRA ID login.")
        user = await self._reg.get_user_by_email(email) if isinstance(email, str) else None
        ok = await self._ctx.passwords.verify(user.password_hash if user else None, str(password))
        if user is None or not ok:
            await self._ctx.audit("enrolment.infotainment_login", "refused", vin=vehicle.vin)
            raise Unauthenticated("The e-mail address or the password is not correct.")
        if not user.verified:
            raise UserNotVerified()
        mine = await self._reg.get_enrolment(vehicle.vin, user.id)
        if mine is None:
            await self._check_room(user.id, already_counted=False)
        return await self._complete(vehicle, user, INFOTAINMENT_LOGIN)

    async def factory_reset(self, vin: str) -> list[EnrolmentRecord]:
        """The car was reset to factory settings (a sale, R16): it leaves every garage, its pairing codes are
        voided, its licence stays with the car. The users who lost it are told by mail."""
        vehicle = await self._known_vehicle(vin)
        removed = await self._reg.delete_enrolments(vehicle.vin, self._ctx.now())
        await self._ctx.audit("vehicle.factory_reset", vin=vehicle.vin, users_removed=len(removed))
        await self._tell_removed(
            [e for e in removed if e.state is EnrolmentState.ACTIVE], vehicle.vin,
            "was reset to factory settings in its infotainment and removed from your garage",
        )
        return removed

    # -- helpers ---------------------------------------------------------------------------------------------
    async def _complete(self, vehicle: VehicleRecord, user: UserRecord, method: str) -> EnrolmentOutcome:
        now = self._ctx.now()
        try:
            removed = await self._reg.make_primary(vehicle.vin, user.id, method, now)
        except RegistryConflict:
            # Another process made someone primary in the same instant: the later completion wins, as R8 says.
            removed = await self._reg.make_primary(vehicle.vin, user.id, method, now)
        previous = next((e.user_id for e in removed if e.role is Role.PRIMARY), None)
        await self._ctx.audit(
            "enrolment.completed", user_id=user.id, vin=vehicle.vin, method=method, replaced=previous
        )
        await self._ctx.mail(
            user.email, "Your CUPRA is in your garage",
            f"You are now the primary user of the CUPRA with VIN {vehicle.vin}.", user_id=user.id,
        )
        await self._tell_removed(list(removed), vehicle.vin, "has a new primary user and was removed from your garage")
        return EnrolmentOutcome(
            vin=vehicle.vin, user_id=user.id, email=user.email, method=method, previous_primary=previous,
            removed=tuple(removed),
        )

    async def _tell_removed(self, removed: list[EnrolmentRecord], vin: str, what: str) -> None:
        for e in removed:
            user = await self._reg.get_user(e.user_id)
            if user is not None:
                await self._ctx.mail(
                    user.email, "A CUPRA left your garage", f"The CUPRA with VIN {vin} {what}.", user_id=user.id
                )

    async def _known_vehicle(self, vin: str) -> VehicleRecord:
        vehicle = await self._reg.get_vehicle(vin) if isinstance(vin, str) and is_valid_vin(vin) else None
        if vehicle is None:
            raise VehicleNotFound()
        return vehicle

    async def _verified_user(self, user_id: str) -> UserRecord:
        user = await self._reg.get_user(user_id)
        if user is None:  # pragma: no cover - users are never deleted
            raise VehicleNotFound()
        if not user.verified:
            raise UserNotVerified()
        return user

    async def _check_room(self, user_id: str, *, already_counted: bool) -> None:
        used = await self._reg.count_user_enrolments(user_id) - (1 if already_counted else 0)
        if used >= self._ctx.config.garage_limit:
            raise GarageFull()
