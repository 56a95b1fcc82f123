"""The fleet file's users, set up the way a person would do it, idempotently across runs.

For each user: log in (or register, read the verification mail in the simulated mailbox, verify, log in) through
an `AppClient`; then enrol their primary cars the realistic way — `add_vehicle` in the app, then the in-car step
the model asks for (two-key owner verification, or the pairing code typed into the infotainment), done on the
car's TCU as the simulator control a person would cause — and wait until the cloud tells the app the car is
enrolled (a car it does not confirm in time is reported as skipped, and the run goes on); finally each primary
user nominates the secondary users of their cars (R10). A car already in the garage with the right role is left
alone, so a second run changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import structlog

from tcu_sim.app import AppClient, AppRequestError
from tcu_sim.fleet import CarSpec, FleetConfig, FleetError, UserConfig, UserRole, select_cars
from tcu_sim.transport import TcuSession

from ._steps import OnboardingError, enrol, log_in_or_sign_up, session_control, verify_from_mailbox, wait_enrolled

__all__ = ["EnrolmentOutcome", "UserCar", "UserPlan", "plan_users", "set_up_users"]

log = structlog.get_logger("tcu_sim.onboard")


class EnrolmentOutcome(StrEnum):
    """What happened to one car of one user in this run."""

    ENROLLED = "enrolled"
    ALREADY = "already"  # enrolled by an earlier run
    INVITED = "invited"  # secondary user, nominated by the primary in this run
    SKIPPED = "skipped"  # could not be done (see `detail`)


@dataclass(frozen=True, slots=True)
class UserCar:
    """One car of one fleet-file user after the set-up."""

    email: str
    vin: str
    role: UserRole
    outcome: EnrolmentOutcome
    detail: str = ""


@dataclass(frozen=True, slots=True)
class UserPlan:
    """Who gets which car: the VINs per user e-mail, and each car's primary user (the first the file names)."""

    wanted: dict[str, list[str]]
    primary_of: dict[str, UserConfig]


def plan_users(config: FleetConfig, cars: Sequence[CarSpec]) -> UserPlan:
    """The fleet file's users and their cars among `cars`."""
    try:
        wanted = {user.email: [car.vin for car in select_cars(cars, user.vehicles)] for user in config.users}
    except FleetError as exc:
        raise OnboardingError(f"users: {exc}") from None
    primary_of: dict[str, UserConfig] = {}
    for user in config.users:
        if user.role is UserRole.PRIMARY:
            for vin in wanted[user.email]:
                primary_of.setdefault(vin, user)
    return UserPlan(wanted, primary_of)


class _Accounts:
    """Logs the one app connection in as each user once, then switches between their session tokens."""

    def __init__(self, app: AppClient) -> None:
        self.app = app
        self._tokens: dict[str, str] = {}

    async def act_as(self, user: UserConfig) -> None:
        """Make `user` the one the app's next requests are for (logging in, or registering, the first time)."""
        token = self._tokens.get(user.email)
        if token is None:
            await self._log_in(user)
            token = self.app.token
            assert token is not None  # a successful login sets it
            self._tokens[user.email] = token
        self.app.token = token

    async def _log_in(self, user: UserConfig) -> None:
        info, registered = await log_in_or_sign_up(
            self.app, user.email, user.password.get_secret_value(), user.spin.get_secret_value(), verify=False
        )
        if registered:
            log.info("user.registered", email=user.email)
        if user.verified and not info.verified:
            await self._verify(user)

    async def _verify(self, user: UserConfig) -> None:
        await verify_from_mailbox(self.app, user.email)
        log.info("user.verified", email=user.email)

    async def log_out_all(self) -> None:
        """End every session this set-up opened."""
        for token in self._tokens.values():
            self.app.token = token
            with contextlib.suppress(AppRequestError):
                await self.app.logout()
        self._tokens.clear()


async def _enrol_primary(
    app: AppClient, user: UserConfig, vins: Sequence[str], sessions: Mapping[str, TcuSession], timeout: float
) -> list[UserCar]:
    garage = {v.get("vin"): v for v in await app.list_vehicles()}
    out: list[UserCar] = []
    todo: list[str] = []
    for vin in vins:
        entry = garage.get(vin)
        if entry is not None and entry.get("state") == "active" and entry.get("role") == "primary":
            out.append(UserCar(user.email, vin, UserRole.PRIMARY, EnrolmentOutcome.ALREADY))
        elif vin not in sessions:
            out.append(UserCar(user.email, vin, UserRole.PRIMARY, EnrolmentOutcome.SKIPPED, "car not in this run"))
        else:
            todo.append(vin)
    # Every car at once (the requests are independent; the cloud answers them in order).
    control = session_control(sessions)
    answers = await asyncio.gather(*(enrol(app, vin, control) for vin in todo), return_exceptions=True)
    waiting: set[str] = set()
    for vin, added in zip(todo, answers, strict=True):
        if isinstance(added, AppRequestError):
            out.append(UserCar(user.email, vin, UserRole.PRIMARY, EnrolmentOutcome.SKIPPED, added.code.value))
            continue
        if isinstance(added, BaseException):
            raise added
        waiting.add(vin)
        out.append(UserCar(user.email, vin, UserRole.PRIMARY, EnrolmentOutcome.ENROLLED, added.method))
    if waiting:
        missing = await wait_enrolled(app, waiting, timeout)
        if missing:
            log.warning("user.enrolment_unconfirmed", email=user.email, vins=sorted(missing))
            why = f"the cloud did not confirm the in-car step within {timeout:g} s"
            out = [
                UserCar(c.email, c.vin, c.role, EnrolmentOutcome.SKIPPED, why) if c.vin in missing else c for c in out
            ]
    return out


async def _secondary(
    accounts: _Accounts, user: UserConfig, vins: Sequence[str], primary_of: Mapping[str, UserConfig]
) -> list[UserCar]:
    """Have each primary user nominate `user` for the cars the file gives them, unless they already are."""
    app = accounts.app
    out: list[UserCar] = []
    await accounts.act_as(user)
    garage = {v.get("vin"): v for v in await app.list_vehicles()}
    by_primary: dict[str, list[str]] = {}
    for vin in vins:
        entry = garage.get(vin)
        primary = primary_of.get(vin)
        if entry is not None and entry.get("state") == "active" and entry.get("role") == "secondary":
            out.append(UserCar(user.email, vin, UserRole.SECONDARY, EnrolmentOutcome.ALREADY))
        elif primary is None or not user.verified:
            why = "no primary user in the fleet file" if primary is None else "not verified"
            out.append(UserCar(user.email, vin, UserRole.SECONDARY, EnrolmentOutcome.SKIPPED, why))
        else:
            by_primary.setdefault(primary.email, []).append(vin)
    for chosen in by_primary.values():
        primary = primary_of[chosen[0]]
        await accounts.act_as(primary)
        for vin in chosen:
            try:
                await app.invite_secondary(vin, user.email)
            except AppRequestError as exc:
                out.append(UserCar(user.email, vin, UserRole.SECONDARY, EnrolmentOutcome.SKIPPED, exc.code.value))
                continue
            out.append(UserCar(user.email, vin, UserRole.SECONDARY, EnrolmentOutcome.INVITED, primary.email))
    return out


async def set_up_users(
    config: FleetConfig,
    cars: Sequence[CarSpec],
    sessions: Mapping[str, TcuSession],
    app_client: Callable[[], AppClient],
    *,
    timeout: float,
) -> list[UserCar]:
    """Create the fleet file's users and enrol their cars (see the module docstring); what was done per car.

    `app_client()` makes a fresh, unconnected `AppClient` (one connection serves every user in turn); the
    in-car step goes to the car's session in `sessions`. Raises OnboardingError when a user cannot be set up.
    """
    if not config.users:
        return []
    plan = plan_users(config, cars)
    out: list[UserCar] = []
    async with app_client() as app:
        accounts = _Accounts(app)
        for user in config.users:  # every account first: an invitation needs a verified invitee
            await accounts.act_as(user)
        for user in config.users:
            if user.role is UserRole.PRIMARY and user.verified:
                await accounts.act_as(user)
                out += await _enrol_primary(app, user, plan.wanted[user.email], sessions, timeout)
        for user in config.users:
            if user.role is UserRole.SECONDARY:
                out += await _secondary(accounts, user, plan.wanted[user.email], plan.primary_of)
        await accounts.log_out_all()
    for car in out:
        log.info("user.car", email=car.email, vin=car.vin, role=car.role.value, outcome=car.outcome.value,
                 detail=car.detail)
    return out
