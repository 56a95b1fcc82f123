"""The steps a person takes to get an account and a car, each one small enough for every caller to share.

    info = await sign_up(app, email, password, spin)          # register, log in, follow the verification mail
    added = await enrol(app, vin, session_control(sessions))  # add in the app, then the in-car step (R5)
    missing = await wait_enrolled(app, {vin}, timeout=10)     # the cloud's `enrolled` push for each car

The in-car step (two-key owner verification, or the pairing code typed into the infotainment) is an operator
control on the car; `CarControl` is how a caller reaches the car: its TCU session in this process
(`session_control`), the operator's MQTT client (`tcu_sim.bench`), the test harness's `SimCar`, or — for the
scenario runner, which seeds users before any car is online — the cloud's own completion of that step.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping

from tcu_sim.app import AppClient, AppTimeout, LoginInfo, Mail, Unauthenticated, VehicleAdded
from tcu_sim.protocol import ControlAction, ControlMessage, EnrolmentMethod, PushEventType, encode_json
from tcu_sim.transport import TcuSession

__all__ = [
    "CarControl",
    "NoVerificationMail",
    "OnboardingError",
    "UnknownEnrolmentMethod",
    "enrol",
    "in_car_step",
    "log_in_or_sign_up",
    "session_control",
    "sign_up",
    "verification_code",
    "verify_from_mailbox",
    "wait_enrolled",
]

_VERIFY_LINK = re.compile(r"verify\?code=([A-Za-z0-9_-]+)")

CarControl = Callable[[str, ControlMessage], Awaitable[None]]
"""Do `message` at the car `vin`, as a person there would (the simulator control on `sim/{vin}/control`)."""


class OnboardingError(Exception):
    """A user could not be signed up or a car not enrolled; the message says who and why (never a secret)."""


class NoVerificationMail(OnboardingError):
    """The simulated mailbox holds no verification link for the user."""


class UnknownEnrolmentMethod(OnboardingError):
    """The cloud answered `add_vehicle` with a method the in-car step does not know."""


def verification_code(bodies: Iterable[str]) -> str | None:
    """The code of the newest verification link among the mail bodies (oldest first), or None."""
    codes = [found.group(1) for body in bodies if (found := _VERIFY_LINK.search(body))]
    return codes[-1] if codes else None


async def verify_from_mailbox(app: AppClient, email: str) -> None:
    """Follow the newest verification link in the logged-in user's simulated mailbox."""
    mails: list[Mail] = await app.mailbox()
    code = verification_code(mail.body for mail in mails)
    if code is None:
        raise NoVerificationMail(f"{email}: no verification mail among {[m.subject for m in mails]}")
    await app.verify_email(code)


async def sign_up(app: AppClient, email: str, password: str, spin: str, *, verify: bool = True) -> LoginInfo:
    """Register (R1), log in and, with `verify`, follow the link of the verification mail; the app stays
    logged in as the user."""
    await app.register(email, password, spin)
    info = await app.login(email, password)
    if verify:
        await verify_from_mailbox(app, email)
    return info


async def log_in_or_sign_up(
    app: AppClient, email: str, password: str, spin: str, *, verify: bool = True
) -> tuple[LoginInfo, bool]:
    """Log in; register first when the cloud does not know the login (a second run of the same fleet file
    changes nothing). With `verify`, an unverified account follows its verification mail. Returns the login
    and whether the account was registered now."""
    registered = False
    try:
        info = await app.login(email, password)
    except Unauthenticated:
        # Unknown here (or a changed password): register. The cloud answers the same either way (R1).
        await app.register(email, password, spin)
        try:
            info = await app.login(email, password)
        except Unauthenticated:
            raise OnboardingError(
                f"{email}: cannot log in with the fleet file's password (was it changed in the app?)"
            ) from None
        registered = True
    if verify and not info.verified:
        await verify_from_mailbox(app, email)
    return info, registered


def in_car_step(vin: str, method: str, pairing_code: str | None) -> ControlMessage:
    """What a person does in the car to finish adding it, for the method the cloud answered `add_vehicle` with."""
    if method == EnrolmentMethod.PAIRING_CODE and pairing_code is not None:
        return ControlMessage(action=ControlAction.ENTER_PAIRING_CODE, params={"code": pairing_code})
    if method == EnrolmentMethod.TKOV:
        return ControlMessage(action=ControlAction.TKOV)
    raise UnknownEnrolmentMethod(f"{vin}: the cloud answered add_vehicle with method {method!r}")


async def enrol(app: AppClient, vin: str, car_control: CarControl) -> VehicleAdded:
    """Add the car in the app, then do the in-car step the cloud asks for; the cloud's answer to the add.

    The cloud confirms asynchronously (a `vehicle_changed`/`enrolled` push, see `wait_enrolled`).
    """
    added = await app.add_vehicle(vin, accept_terms=True)
    await car_control(vin, in_car_step(vin, added.method, added.pairing_code))
    return added


async def wait_enrolled(app: AppClient, vins: Collection[str], timeout: float) -> set[str]:
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


def session_control(sessions: Mapping[str, TcuSession]) -> CarControl:
    """The in-car step handed to the car's TCU session in this process, as the simulator control would be."""

    async def control(vin: str, message: ControlMessage) -> None:
        sessions[vin].handle_control(encode_json(message.model_dump(mode="json")))

    return control
