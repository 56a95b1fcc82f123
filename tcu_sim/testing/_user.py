"""`SimUser`: an app user of a sandbox's cloud — registered, e-mail verified, logged in, with an S-PIN.

    user = await sandbox.new_user()                        # register, verify (simulated mailbox), log in
    await user.enrol(car)                                  # add in the app, then the in-car step (R5)
    state = await user.command(car, "lock")                # the command's final state
    await user.command(car, "unlock", expect="succeeded")  # CommandFailed (with the history) otherwise

Everything goes through the real app API over MQTT (`user.app` is the `AppClient`); typed app errors
(`SpinIncorrect`, `VehicleOffline`, ...) reach the test unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

from broker.cloud import SPIN_OPS
from broker.registry import CommandRecord, EnrolmentState
from tcu_sim.app import AppClient, AppConnectionError
from tcu_sim.onboard import NoVerificationMail, UnknownEnrolmentMethod, enrol, sign_up
from tcu_sim.protocol import CommandOp, CommandState, ControlMessage, Topics

from ._brokers import AppLogin, SimBroker
from ._errors import CarControlRefused, CommandFailed, HarnessSetupError

if TYPE_CHECKING:
    from ._cloud import SimCloud
    from ._fleet import SimCar

__all__ = ["DEFAULT_PASSWORD", "DEFAULT_SPIN", "SimUser"]

DEFAULT_PASSWORD: Final = "correct horse battery staple"  # noqa: S105  # a test credential, not a secret
DEFAULT_SPIN: Final = "4711"  # a test S-PIN (not trivial by R2)


class _Own:
    """Marker: "use the user's own S-PIN when the op needs one"."""

    def __repr__(self) -> str:
        return "OWN_SPIN"


OWN_SPIN: Final = _Own()


class SimUser:
    """An app user with a logged-in `AppClient` (an async context manager: it owns the client's connection).

    The password and S-PIN are test credentials; they never appear in the repr.
    """

    def __init__(
        self,
        cloud: SimCloud,
        broker: SimBroker,
        *,
        email: str,
        password: str = DEFAULT_PASSWORD,
        spin: str = DEFAULT_SPIN,
        timeout: float = 10.0,
    ) -> None:
        self.cloud = cloud
        self.broker = broker
        self.email = email
        self.password = password
        self.spin = spin
        self.timeout = timeout
        self._app: AppClient | None = None
        self._login: AppLogin | None = None
        self.last_command: CommandRecord | None = None

    def __repr__(self) -> str:
        state = "connected" if self._app is not None else "closed"
        return f"SimUser({self.email!r}, {state})"

    @property
    def app(self) -> AppClient:
        """The user's app client (connected and logged in)."""
        if self._app is None:
            raise HarnessSetupError(f"{self.email}: the app is not connected")
        return self._app

    # --- lifecycle
    async def __aenter__(self) -> Self:
        self._login = await self.broker.new_app_login()
        app = self._client(self._login, token=None)
        await app.__aenter__()
        self._app = app
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        app, self._app = self._app, None
        if app is not None:
            await app.__aexit__(None, None, None)

    async def reconnect(self) -> None:
        """Connect the app again, keeping its session token (after the broker was restarted, for instance)."""
        assert self._login is not None  # entered
        old, self._app = self._app, None
        token = old.token if old is not None else None
        if old is not None:
            with contextlib.suppress(AppConnectionError):
                await old.__aexit__(None, None, None)
        app = self._client(self._login, token=token)
        await app.__aenter__()
        self._app = app

    async def new_app(self) -> AppClient:
        """Another (not yet connected) app client on a login of its own: a second phone of the same user."""
        return self._client(await self.broker.new_app_login(), token=None)

    def _client(self, login: AppLogin, *, token: str | None) -> AppClient:
        return AppClient(
            self.broker.app_host,
            self.broker.app_port,
            login.username,
            login.password,
            tls_context=self.broker.app_tls_context(),
            topics=Topics(self.cloud.topic_prefix),
            token=token,
            timeout=self.timeout,
            connect_timeout=self.timeout,
            rng=self.cloud.rng,
        )

    async def sign_up(self, *, verify: bool = True, login: bool = True) -> None:
        """Register (R1); with `verify`, log in and follow the link of the verification mail from the simulated
        mailbox; with `login`, stay logged in."""
        app = self.app
        if not (login or verify):
            await app.register(self.email, self.password, self.spin)
            return
        try:
            await sign_up(app, self.email, self.password, self.spin, verify=verify)
        except NoVerificationMail as exc:
            raise HarnessSetupError(str(exc)) from None
        if not login:
            await app.logout()

    async def user_id(self) -> str:
        """The cloud's id of this user."""
        user = await self.cloud.registry.get_user_by_email(self.email)
        if user is None:
            raise HarnessSetupError(f"{self.email}: not registered")
        return user.id

    # --- garage
    async def enrol(self, car: SimCar, *, timeout: float | None = None) -> None:
        """Add the car in the app and complete the in-car step its model needs (two-key verification or the
        pairing code in the infotainment, R5); return once the cloud has made this user its primary user."""
        wait = self.timeout if timeout is None else timeout

        async def at_the_car(vin: str, message: ControlMessage) -> None:
            car.control(message.action, **message.params)

        try:
            added = await enrol(self.app, car.vin, at_the_car)
        except UnknownEnrolmentMethod as exc:
            raise CarControlRefused(str(exc)) from None
        user_id = await self.user_id()

        async def active() -> bool | None:
            enrolment = await self.cloud.registry.get_enrolment(car.vin, user_id)
            return True if enrolment is not None and enrolment.state is EnrolmentState.ACTIVE else None

        async def what() -> str:
            enrolment = await self.cloud.registry.get_enrolment(car.vin, user_id)
            state = enrolment.state.value if enrolment is not None else "no enrolment"
            lines = [f"{self.email}: enrolment of {car.vin} by {added.method} not active within {wait:g} s ({state})"]
            lines += await self.cloud.explain_car(car.vin)
            return "\n".join(lines)

        await self.cloud.wait_until(active, timeout=wait, what=what)

    # --- commands
    async def send(
        self,
        car: SimCar | str,
        op: CommandOp | str,
        params: Mapping[str, Any] | None = None,
        *,
        spin: str | _Own | None = OWN_SPIN,
    ) -> str:
        """Ask for a command and return its id without waiting. `spin` defaults to the user's own S-PIN for the
        ops that need one (lock, unlock, heater and ventilation start); pass `spin=None` to send none."""
        vin = car if isinstance(car, str) else car.vin
        command_op = _op(op)
        if isinstance(spin, _Own):
            spin = self.spin if command_op in SPIN_OPS else None
        return await self.app.command(vin, command_op, params, spin=spin)

    async def command(
        self,
        car: SimCar | str,
        op: CommandOp | str,
        params: Mapping[str, Any] | None = None,
        *,
        spin: str | _Own | None = OWN_SPIN,
        timeout: float | None = None,
        expect: CommandState | str | None = None,
    ) -> CommandState:
        """Send a command and wait for its final state (`succeeded`, `failed`, `rejected`, `timed_out`).

        With `expect`, any other final state raises `CommandFailed`; a command that does not finish in
        `timeout` seconds raises `WaitTimeout`. Both messages quote the command's history and the car's
        status. `last_command` holds the final record (its `reason`, `detail`).
        """
        command_id = await self.send(car, op, params, spin=spin)
        wait = self.timeout if timeout is None else timeout
        record = await self.cloud.wait_for_command(command_id, timeout=wait)
        self.last_command = record
        if expect is not None and record.state is not CommandState(expect):
            raise CommandFailed(
                await self.cloud.explain_command(
                    command_id, f"expected {CommandState(expect).value}, but it ended {record.state.value}"
                )
            )
        return record.state


def _op(op: CommandOp | str) -> CommandOp:
    try:
        return CommandOp(op)
    except ValueError:
        names = ", ".join(o.value for o in CommandOp)
        raise ValueError(f"unknown command op {op!r}; one of {names}") from None
