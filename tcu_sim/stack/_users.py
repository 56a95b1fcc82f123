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
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import structlog

from tcu_sim.app import AppClient, AppRequestError, AppTimeout, Unauthenticated
from tcu_sim.fleet import CarSpec, FleetConfig, FleetError, UserConfig, UserRole, select_cars
from tcu_sim.protocol import ControlAction, ControlMessage, PushEventType, encode_json
from tcu_sim.stack._errors import EnrolmentError
from tcu_sim.transport import TcuSession

__all__ = ["EnrolmentOutcome", "UserCar", "set_up_users"]

log = structlog.get_logger("tcu_sim.stack.users")

_VERIFY_CODE = re.compile(r"verify\?code=([A-Za-z0-9_-]+)")


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


def _wanted(config: FleetConfig, cars: Sequence[CarSpec]) -> dict[str, list[str]]:
    """VINs per user e-mail, as the fleet file asks."""
    try:
        return {user.email: [car.vin for car in select_cars(cars, user.vehicles)] for user in config.users}
    except FleetError as exc:
        raise EnrolmentError(f"users: {exc}") from None


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
        app, password = self.app, user.password.get_secret_value()
        try:
            info = await app.login(user.email, password)
        except Unauthenticated:
            # Unknown here (or a changed password): register. The cloud answers the same either way (R1).
            await app.register(user.email, password, user.spin.get_secret_value())
            try:
                info = await app.login(user.email, password)
            except Unauthenticated:
                raise EnrolmentError(
                    f"{user.email}: cannot log in with the fleet file's password (was it changed in the app?)"
                ) from None
            log.info("user.registered", email=user.email)
        if user.verified and not info.verified:
            for mail in reversed(await app.mailbox()):
                match = _VERIFY_CODE.search(mail.body)
                if match:
                    await app.verify_email(match.group(1))
                    log.info("user.verified", email=user.email)
                    break
            else:
                raise EnrolmentError(f"{user.email}: no verification mail in the mailbox")

    async def log_out_all(self) -> None:
        """End every session this set-up opened."""
        for token in self._tokens.values():
            self.app.token = token
            with contextlib.suppress(AppRequestError):
                await self.app.logout()
        self._tokens.clear()


def _control(session: TcuSession, action: ControlAction, **params: object) -> None:
    """What a person does in the car, handed to its TCU as the simulator control would be."""
    message = ControlMessage(action=action, params=dict(params))
    session.handle_control(encode_json(message.model_dump(mode="json")))


async def _wait_enrolled(app: AppClient, vins: set[str], timeout: float) -> set[str]:
    """Wait for the cloud's `vehicle_changed`/`enrolled` push for every car in `vins`; the cars it did not confirm
    within `timeout` seconds (the cloud refused the in-car step, or the car's event never reached it)."""
    waiting = set(vins)
    with contextlib.suppress(TimeoutError, AppTimeout):
        async with asyncio.timeout(timeout):
            while waiting:
                event = await app.next_event(timeout=timeout)
                if event.type is PushEventType.VEHICLE_CHANGED and event.data.get("event") == "enrolled":
                    waiting.discard(str(event.data.get("vin")))
    return waiting


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
    # Ask for every car at once (the requests are independent; the cloud answers them in order).
    answers = await asyncio.gather(*(app.add_vehicle(vin, accept_terms=True) for vin in todo), return_exceptions=True)
    waiting: set[str] = set()
    for vin, added in zip(todo, answers, strict=True):
        if isinstance(added, AppRequestError):
            out.append(UserCar(user.email, vin, UserRole.PRIMARY, EnrolmentOutcome.SKIPPED, added.code.value))
            continue
        if isinstance(added, BaseException):
            raise added
        if added.method == "pairing_code" and added.pairing_code is not None:
            _control(sessions[vin], ControlAction.ENTER_PAIRING_CODE, code=added.pairing_code)
        else:
            _control(sessions[vin], ControlAction.TKOV)
        waiting.add(vin)
        out.append(UserCar(user.email, vin, UserRole.PRIMARY, EnrolmentOutcome.ENROLLED, added.method))
    if waiting:
        missing = await _wait_enrolled(app, waiting, timeout)
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

    `app_client()` makes a fresh, unconnected `AppClient` (one connection serves every user in turn).
    Raises EnrolmentError when a user cannot be set up at all.
    """
    if not config.users:
        return []
    wanted = _wanted(config, cars)
    primary_of: dict[str, UserConfig] = {}
    for user in config.users:
        if user.role is UserRole.PRIMARY:
            for vin in wanted[user.email]:
                primary_of.setdefault(vin, user)
    out: list[UserCar] = []
    async with app_client() as app:
        accounts = _Accounts(app)
        for user in config.users:  # every account first: an invitation needs a verified invitee
            await accounts.act_as(user)
        for user in config.users:
            if user.role is UserRole.PRIMARY and user.verified:
                await accounts.act_as(user)
                out += await _enrol_primary(app, user, wanted[user.email], sessions, timeout)
        for user in config.users:
            if user.role is UserRole.SECONDARY:
                out += await _secondary(accounts, user, wanted[user.email], primary_of)
        await accounts.log_out_all()
    for car in out:
        log.info("user.car", email=car.email, vin=car.vin, role=car.role.value, outcome=car.outcome.value,
                 detail=car.detail)
    return out
