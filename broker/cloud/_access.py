"""The access checks every car service goes through, in the order of issue 4:

session → car in the user's garage → role and rights → licence → privacy

A car that is not in the caller's garage — unknown VIN, malformed VIN, somebody else's car, or an enrolment
still pending — raises the one `VehicleNotFound()`, whose message never names the VIN, so that the replies
cannot be told apart (SPEC §2.5).
"""

from __future__ import annotations

from dataclasses import dataclass

from broker.registry import CarContext, EnrolmentRecord, EnrolmentState, LicenceRecord, VehicleRecord
from tcu_sim.protocol import PrivacyMode, is_valid_vin

from ._accounts import AccountService, Principal
from ._context import ServiceContext
from ._errors import CloudError, InsufficientRights, LicenseExpired, LicenseMissing, PrivacyModeOn, VehicleNotFound
from ._rights import Right, rights_of

__all__ = ["Access", "AccessControl", "licence_problem"]


def licence_problem(licence: LicenceRecord | None, now: float) -> CloudError | None:
    """Why the car's services cannot be used at `now` for lack of a valid licence (R11, R12), or None."""
    if licence is None or now < licence.starts_at:
        return LicenseMissing()
    if now >= licence.ends_at:
        return LicenseExpired()
    return None


@dataclass(frozen=True, slots=True)
class Access:
    """A user's checked access to one of their cars, with what the store knew about the car at the check."""

    principal: Principal
    context: CarContext

    @property
    def vehicle(self) -> VehicleRecord:
        """The car's factory data."""
        return self.context.vehicle

    @property
    def enrolment(self) -> EnrolmentRecord:
        """The user's (active) enrolment for the car."""
        assert self.context.enrolment is not None  # an Access is only made for an active enrolment
        return self.context.enrolment

    @property
    def vin(self) -> str:
        """The car's VIN."""
        return self.vehicle.vin


class AccessControl:
    """Decides whether a session may use a service of a car."""

    def __init__(self, ctx: ServiceContext, accounts: AccountService) -> None:
        self._ctx = ctx
        self._reg = ctx.registry
        self._accounts = accounts

    def __repr__(self) -> str:
        return f"AccessControl({self._reg!r})"

    async def vehicle(self, token: str | None, vin: str, right: Right | None = None) -> Access:
        """Session, car in the garage (active enrolment), and `right` for the user's role."""
        return await self.vehicle_for(await self._accounts.authenticate(token), vin, right)

    async def vehicle_for(self, principal: Principal, vin: str, right: Right | None = None) -> Access:
        """As `vehicle`, for a session already authenticated."""
        if not isinstance(vin, str) or not is_valid_vin(vin):
            raise VehicleNotFound()
        context = await self._reg.get_car_context(vin, principal.user_id)
        if context is None or context.enrolment is None or context.enrolment.state is not EnrolmentState.ACTIVE:
            raise VehicleNotFound()
        if right is not None and right not in rights_of(context.enrolment.role):
            raise InsufficientRights()
        return Access(principal=principal, context=context)

    async def service(self, token: str | None, vin: str, right: Right) -> Access:
        """`vehicle`, then a valid licence (R11, R12) and privacy below maximum (R13)."""
        access = await self.vehicle(token, vin, right)
        self.check_licence(access.context)
        self.check_privacy(access.context)
        return access

    def check_licence(self, context: CarContext) -> None:
        """Raise `LicenseMissing` / `LicenseExpired` unless the car has a valid licence now."""
        problem = licence_problem(context.licence, self._ctx.now())
        if problem is not None:
            raise problem

    @staticmethod
    def check_privacy(context: CarContext) -> None:
        """Raise `PrivacyModeOn` when the car's last status (or privacy event) says maximum privacy."""
        if context.privacy_mode == PrivacyMode.MAX.value:
            raise PrivacyModeOn()
