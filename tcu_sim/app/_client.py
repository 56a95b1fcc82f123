"""`AppClient`: what a phone app does, over MQTT (SPEC §2.5).

The client publishes `{id, op, token?, params}` on `app/{client_id}/requests` and waits for the response with
that id on `app/{client_id}/responses`; push events arrive on `app/{client_id}/events`. Replies are matched to
requests through futures keyed by request id, removed in `finally` whatever happens; every wait has a timeout.
The session token of `login` is kept in the client (never logged, never in a repr) and sent with every request.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Any, Self

import aiomqtt
import structlog

from tcu_sim._net import SOCKET_OPTIONS
from tcu_sim.protocol import (
    AppOp,
    AppRequest,
    AppResponse,
    CommandOp,
    CommandState,
    ProtocolError,
    PushEvent,
    PushEventType,
    Topics,
    decode_json,
    encode_json,
    parse_body,
)

from ._errors import (
    AppConnectionError,
    AppProtocolError,
    AppTimeout,
    error_from_app_error,
)
from ._results import CommandInfo, LoginInfo, Mail, VehicleAdded

__all__ = ["AppClient"]

log = structlog.get_logger("tcu_sim.app")

_STATES_KEPT = 1024  # command states remembered from push events (oldest forgotten first)


class AppClient:
    """An app's connection to the cloud: one typed method per app API op.

    ```
    async with AppClient("localhost", 8883, "app-alice", "mqtt-password", tls_context=ctx) as app:
        await app.login("alice@example.com", "correct horse")
        command_id = await app.lock(vin, spin="2580")
        state = await app.wait_command(command_id, timeout=30)
    ```

    `client_id` is the MQTT client id and, unless `username` is given, the broker username too (the broker lets
    an app reach only `app/{its client id}/#`). Push events are kept in a bounded queue (`events_queue_size`; the
    oldest is dropped and counted when it is full) and read with `events()` or `next_event()`.
    """

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        password: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        *,
        username: str | None = None,
        token: str | None = None,
        topics: Topics | None = None,
        timeout: float = 10.0,
        connect_timeout: float = 10.0,
        protocol: aiomqtt.ProtocolVersion = aiomqtt.ProtocolVersion.V311,
        events_queue_size: int = 256,
        rng: random.Random | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.topics = topics or Topics()
        self.client_id = client_id
        self._topic_requests = self.topics.app_requests(client_id)  # refuses a client id unfit for a topic
        self._topic_responses = self.topics.app_responses(client_id)
        self._topic_events = self.topics.app_events(client_id)
        self._username = client_id if username is None else username
        self._password = password
        self._tls = tls_context
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._protocol = protocol
        self._token = token
        # Request ids need uniqueness, not secrecy.
        self._rng = rng or random.Random()
        self._pending: dict[str, asyncio.Future[AppResponse]] = {}
        self._events: asyncio.Queue[PushEvent] = asyncio.Queue(maxsize=events_queue_size)
        self._states: OrderedDict[str, CommandInfo] = OrderedDict()
        self._state_changed = asyncio.Condition()
        self._client: aiomqtt.Client | None = None
        self._tasks: asyncio.TaskGroup | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closed: BaseException | None = None
        self.events_dropped = 0
        self.responses_unmatched = 0

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        client = aiomqtt.Client(
            self.host,
            self.port,
            identifier=self.client_id,
            username=self._username,
            password=self._password,
            tls_context=self._tls,
            protocol=self._protocol,
            clean_session=True if self._protocol is not aiomqtt.ProtocolVersion.V5 else None,
            timeout=self.connect_timeout,
            socket_options=SOCKET_OPTIONS,
        )
        try:
            async with asyncio.timeout(self.connect_timeout):
                await client.__aenter__()
        except (aiomqtt.MqttError, TimeoutError) as exc:
            raise AppConnectionError(f"cannot connect to {self.host}:{self.port}: {exc}") from None
        try:
            async with asyncio.timeout(self.connect_timeout):
                await client.subscribe(self._topic_responses, qos=1)
                await client.subscribe(self._topic_events, qos=1)
        except (aiomqtt.MqttError, TimeoutError) as exc:
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):  # the connection may be gone already
                await client.__aexit__(None, None, None)
            raise AppConnectionError(f"cannot subscribe to the app topics: {exc}") from None
        self._client = client
        self._closed = None
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        self._reader = self._tasks.create_task(self._read(client), name=f"app[{self.client_id}].reader")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        client, tasks = self._client, self._tasks
        self._client = self._tasks = None
        self._fail_pending(AppConnectionError("the app client was closed"))
        if client is not None:
            # Disconnecting ends the reader (its message iterator raises), then the task group is left.
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                async with asyncio.timeout(self.connect_timeout):
                    await client.__aexit__(None, None, None)
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None
        if tasks is not None:
            await tasks.__aexit__(None, None, None)

    def __repr__(self) -> str:
        state = "connected" if self._client is not None else "closed"
        logged_in = "logged in" if self._token else "no session"
        return (
            f"AppClient(client_id={self.client_id!r}, {self.host}:{self.port}, {state}, {logged_in},"
            f" pending={len(self._pending)})"
        )

    # -- the session token -----------------------------------------------------------------------------------
    @property
    def token(self) -> str | None:
        """The session token of the last `login` (or the one passed in)."""
        return self._token

    @token.setter
    def token(self, value: str | None) -> None:
        self._token = value

    # -- requests --------------------------------------------------------------------------------------------
    def new_request_id(self) -> str:
        """A fresh request id."""
        return f"r-{self._rng.getrandbits(64):016x}"

    async def request(
        self,
        op: AppOp | str,
        params: Mapping[str, Any] | None = None,
        *,
        request_id: str | None = None,
        timeout: float | None = None,
        authenticated: bool = True,
    ) -> dict[str, Any]:
        """Send one request and return its `result`; raise the typed `AppRequestError` the cloud answered, or
        `AppTimeout` / `AppConnectionError`. The same `request_id` sent twice makes the cloud act once."""
        client = self._client
        if client is None:
            raise AppConnectionError("the app client is not connected") from self._closed
        request_id = request_id or self.new_request_id()
        request = AppRequest(
            id=request_id,
            op=str(op),
            token=self._token if authenticated else None,
            params=dict(params or {}),
        )
        payload = encode_json(request.model_dump(mode="json"))
        future: asyncio.Future[AppResponse] = asyncio.get_running_loop().create_future()
        if request_id in self._pending:
            raise ValueError(f"request id {request_id!r} is already waiting for its response")
        self._pending[request_id] = future
        wait = self.timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(wait):
                await client.publish(self._topic_requests, payload, qos=1)
                response = await future
        except TimeoutError:
            raise AppTimeout(f"no response to {op} (request {request_id}) within {wait:g} s") from None
        except aiomqtt.MqttError as exc:
            raise AppConnectionError(f"cannot send {op}: {exc}") from None
        finally:
            self._pending.pop(request_id, None)
        if not response.ok:
            assert response.error is not None  # an AppResponse that is not ok always has one
            raise error_from_app_error(response.error, request_id)
        return dict(response.result or {})

    # -- account ---------------------------------------------------------------------------------------------
    async def register(self, email: str, password: str, spin: str) -> None:
        """Create a CUPRA ID; a verification link arrives in the mailbox (the reply is the same whether or not
        the address is taken, R1)."""
        await self.request(AppOp.REGISTER, {"email": email, "password": password, "spin": spin}, authenticated=False)

    async def verify_email(self, code: str) -> None:
        """Confirm the e-mail address with the code of the verification link."""
        await self.request(AppOp.VERIFY_EMAIL, {"code": code}, authenticated=False)

    async def login(self, email: str, password: str) -> LoginInfo:
        """Open a session; the client keeps its token for later requests."""
        result = await self.request(AppOp.LOGIN, {"email": email, "password": password}, authenticated=False)
        info = LoginInfo.from_result(result)
        self._token = info.token
        return info

    async def logout(self) -> None:
        """End the session and forget its token."""
        await self.request(AppOp.LOGOUT)
        self._token = None

    async def change_password(self, old_password: str, new_password: str) -> int:
        """Replace the password; every other session of the user ends (R17). How many sessions ended."""
        result = await self.request(
            AppOp.CHANGE_PASSWORD, {"old_password": old_password, "new_password": new_password}
        )
        ended = result.get("sessions_ended", 0)
        return ended if isinstance(ended, int) else 0

    async def change_spin(self, old_spin: str, new_spin: str) -> None:
        """Replace the S-PIN (needs the old one, and a car in the garage: R4)."""
        await self.request(AppOp.CHANGE_SPIN, {"old_spin": old_spin, "new_spin": new_spin})

    async def set_reauth_timeout(self, minutes: int | None) -> None:
        """Ask for the password again after 5, 10 or 15 idle minutes, or never (None) (R17)."""
        await self.request(AppOp.SET_REAUTH_TIMEOUT, {"minutes": minutes})

    async def mailbox(self) -> list[Mail]:
        """The simulated e-mails sent to the user, oldest first."""
        result = await self.request(AppOp.MAILBOX)
        mails = result.get("mails", [])
        if not isinstance(mails, list):
            raise AppProtocolError("response result: 'mails' must be a list")
        return [Mail.from_result(m) for m in mails if isinstance(m, Mapping)]

    # -- garage ----------------------------------------------------------------------------------------------
    async def add_vehicle(self, vin: str, *, accept_terms: bool = True) -> VehicleAdded:
        """Add a car to the garage (R5): how it is to be enrolled (two keys in the car, or a pairing code)."""
        result = await self.request(AppOp.ADD_VEHICLE, {"vin": vin, "accept_terms": accept_terms})
        return VehicleAdded.from_result(result, vin)

    async def remove_vehicle(self, vin: str) -> None:
        """Remove a car from the garage (voids its pairing code, R6)."""
        await self.request(AppOp.REMOVE_VEHICLE, {"vin": vin})

    async def list_vehicles(self) -> list[dict[str, Any]]:
        """The garage: one dict per car (vin, model, role, state, ...)."""
        result = await self.request(AppOp.LIST_VEHICLES)
        vehicles = result.get("vehicles", [])
        if not isinstance(vehicles, list):
            raise AppProtocolError("response result: 'vehicles' must be a list")
        return [dict(v) for v in vehicles if isinstance(v, Mapping)]

    async def vehicle_status(self, vin: str) -> dict[str, Any]:
        """What the cloud last heard from the car: `{vin, online, status, ...}` (`status` may be null)."""
        return await self.request(AppOp.VEHICLE_STATUS, {"vin": vin})

    async def invite_secondary(self, vin: str, email: str) -> dict[str, Any]:
        """Nominate a secondary user for the car (primary user only, R10)."""
        return await self.request(AppOp.INVITE_SECONDARY, {"vin": vin, "email": email})

    async def remove_secondary(self, vin: str, email: str) -> dict[str, Any]:
        """Remove a secondary user from the car (primary user only)."""
        return await self.request(AppOp.REMOVE_SECONDARY, {"vin": vin, "email": email})

    # -- commands --------------------------------------------------------------------------------------------
    async def command(
        self,
        vin: str,
        op: CommandOp | str,
        params: Mapping[str, Any] | None = None,
        spin: str | None = None,
        *,
        request_id: str | None = None,
    ) -> str:
        """Ask the cloud to send the car a command; its `command_id`. Progress arrives as push events (see
        `wait_command`). Sending the same `request_id` again returns the same command."""
        body: dict[str, Any] = {"vin": vin, "op": str(op), "params": dict(params or {})}
        if spin is not None:
            body["spin"] = spin
        result = await self.request(AppOp.COMMAND, body, request_id=request_id)
        command_id = result.get("command_id")
        if not isinstance(command_id, str):
            raise AppProtocolError("response result: 'command_id' must be a string")
        if isinstance(result.get("state"), str):
            with contextlib.suppress(AppProtocolError):
                self._remember(CommandInfo.from_result(result))
        return command_id

    async def command_status(self, command_id: str) -> CommandInfo:
        """The command's current state."""
        info = CommandInfo.from_result(await self.request(AppOp.COMMAND_STATUS, {"command_id": command_id}))
        self._remember(info)
        return info

    async def wait_command(self, command_id: str, timeout: float) -> CommandState:
        """Wait until the command reaches a final state (from push events, and the command's status as a
        fallback); the final state. `AppTimeout` when it is not final within `timeout`."""
        try:
            async with asyncio.timeout(timeout):
                return (await self.wait_command_info(command_id)).state
        except TimeoutError:
            raise AppTimeout(f"command {command_id} not finished within {timeout:g} s") from None

    async def wait_command_info(self, command_id: str) -> CommandInfo:
        """As `wait_command`, without a timeout of its own (wrap it in one): the final `CommandInfo`."""
        known = self._states.get(command_id)
        if known is None or not known.state.is_final:
            # A push may have come before this call, or been missed: ask once, then follow the pushes.
            known = await self.command_status(command_id)
        async with self._state_changed:
            while True:
                known = self._states.get(command_id, known)
                if known.state.is_final:
                    return known
                await self._state_changed.wait()

    def known_state(self, command_id: str) -> CommandInfo | None:
        """The command's latest state this client heard of (push events, replies), without asking the cloud."""
        return self._states.get(command_id)

    async def lock(self, vin: str, spin: str) -> str:
        """Lock the car (S-PIN required)."""
        return await self.command(vin, CommandOp.LOCK, spin=spin)

    async def unlock(self, vin: str, spin: str) -> str:
        """Unlock the car (S-PIN required)."""
        return await self.command(vin, CommandOp.UNLOCK, spin=spin)

    async def honk_and_flash(self, vin: str, *, mode: str = "honk_and_flash", duration_s: int = 10) -> str:
        """Honk and flash (or only flash: `mode="flash"`)."""
        return await self.command(vin, CommandOp.HONK_AND_FLASH, {"mode": mode, "duration_s": duration_s})

    async def heater_start(
        self, vin: str, spin: str, *, duration_min: int = 30, target_temperature_c: float = 22.0
    ) -> str:
        """Start the auxiliary heater (S-PIN required)."""
        params = {"duration_min": duration_min, "target_temperature_c": target_temperature_c}
        return await self.command(vin, CommandOp.AUX_HEATING_START, params, spin=spin)

    async def heater_stop(self, vin: str) -> str:
        """Stop the auxiliary heater."""
        return await self.command(vin, CommandOp.AUX_HEATING_STOP)

    async def ventilation_start(self, vin: str, spin: str, *, duration_min: int = 30) -> str:
        """Start the ventilation (S-PIN required)."""
        return await self.command(vin, CommandOp.VENTILATION_START, {"duration_min": duration_min}, spin=spin)

    async def ventilation_stop(self, vin: str) -> str:
        """Stop the ventilation."""
        return await self.command(vin, CommandOp.VENTILATION_STOP)

    async def refresh_status(self, vin: str) -> str:
        """Wake the car so it sends a fresh status."""
        return await self.command(vin, CommandOp.STATUS_REFRESH)

    # -- services for primary and secondary users ------------------------------------------------------------
    async def driving_data(self, vin: str, *, since: float | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The car's trips, newest first (those started at or after `since`, at most `limit`)."""
        params: dict[str, Any] = {"vin": vin, "limit": limit}
        if since is not None:
            params["since"] = since
        trips: list[dict[str, Any]] = (await self.request(AppOp.DRIVING_DATA, params))["trips"]
        return trips

    async def health_report(self, vin: str) -> dict[str, Any]:
        """The vehicle health report (warnings, inspection and service due, 12 V battery, ...)."""
        return await self.request(AppOp.HEALTH_REPORT, {"vin": vin})

    async def roadside_status(self, vin: str) -> list[dict[str, Any]]:
        """The car's roadside-assistance cases, newest first."""
        cases: list[dict[str, Any]] = (await self.request(AppOp.ROADSIDE_STATUS, {"vin": vin}))["cases"]
        return cases

    # -- primary-only services -------------------------------------------------------------------------------
    async def speed_alert_set(self, vin: str, **settings: Any) -> dict[str, Any]:
        """Set the speed alert (`max_speed_kmh`, `enabled`; primary user only, R10)."""
        return await self.request(AppOp.SPEED_ALERT_SET, {"vin": vin, **settings})

    async def speed_alert_get(self, vin: str) -> dict[str, Any] | None:
        """The speed alert, or None."""
        setting: dict[str, Any] | None = (await self.request(AppOp.SPEED_ALERT_GET, {"vin": vin}))["speed_alert"]
        return setting

    async def speed_alert_delete(self, vin: str) -> bool:
        """Remove the speed alert; False when there was none."""
        return bool((await self.request(AppOp.SPEED_ALERT_DELETE, {"vin": vin}))["deleted"])

    async def area_alert_set(self, vin: str, **settings: Any) -> dict[str, Any]:
        """Set the area alert (`lat`, `lon`, `radius_m`, `enabled`; primary user only, R10)."""
        return await self.request(AppOp.AREA_ALERT_SET, {"vin": vin, **settings})

    async def area_alert_get(self, vin: str) -> dict[str, Any] | None:
        """The area alert, or None."""
        setting: dict[str, Any] | None = (await self.request(AppOp.AREA_ALERT_GET, {"vin": vin}))["area_alert"]
        return setting

    async def area_alert_delete(self, vin: str) -> bool:
        """Remove the area alert; False when there was none."""
        return bool((await self.request(AppOp.AREA_ALERT_DELETE, {"vin": vin}))["deleted"])

    async def service_scheduling_book(self, vin: str, **booking: Any) -> dict[str, Any]:
        """Book a service appointment (`date`, `workshop?`, `reason?`; primary user only, R10)."""
        return await self.request(AppOp.SERVICE_SCHEDULING_BOOK, {"vin": vin, **booking})

    async def service_scheduling_list(self, vin: str) -> list[dict[str, Any]]:
        """The car's service appointments, oldest booked first."""
        bookings: list[dict[str, Any]] = (
            await self.request(AppOp.SERVICE_SCHEDULING_LIST, {"vin": vin})
        )["bookings"]
        return bookings

    async def service_scheduling_cancel(self, vin: str, booking_id: str) -> dict[str, Any]:
        """Cancel a booked appointment."""
        return await self.request(AppOp.SERVICE_SCHEDULING_CANCEL, {"vin": vin, "booking_id": booking_id})

    # -- licences --------------------------------------------------------------------------------------------
    async def licence_status(self, vin: str) -> dict[str, Any]:
        """The car's licence: term, validity, purchases."""
        return await self.request(AppOp.LICENCE_STATUS, {"vin": vin})

    async def licence_renew(self, vin: str, years: int = 1) -> dict[str, Any]:
        """Buy `years` more of the car's services (R14)."""
        return await self.request(AppOp.LICENCE_RENEW, {"vin": vin, "years": years})

    async def licence_cancel(self, vin: str) -> dict[str, Any]:
        """Cancel the last purchase within its 14 days (R15)."""
        return await self.request(AppOp.LICENCE_CANCEL, {"vin": vin})

    # -- push events -----------------------------------------------------------------------------------------
    async def next_event(self, timeout: float | None = None) -> PushEvent:
        """The next push event; `AppTimeout` when none arrives within `timeout` (default: the client's)."""
        wait = self.timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(wait):
                return await self._events.get()
        except TimeoutError:
            raise AppTimeout(f"no push event within {wait:g} s") from None

    async def events(self) -> AsyncIterator[PushEvent]:
        """Push events as they arrive (an endless iterator: stop it by breaking out or cancelling)."""
        while True:
            yield await self._events.get()

    def pending_events(self) -> list[PushEvent]:
        """Every push event received and not yet read, without waiting."""
        out = []
        while not self._events.empty():
            out.append(self._events.get_nowait())
        return out

    # -- internals -------------------------------------------------------------------------------------------
    async def _read(self, client: aiomqtt.Client) -> None:
        try:
            async for message in client.messages:
                payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
                if message.topic.matches(self._topic_responses):
                    self._on_response(payload)
                elif message.topic.matches(self._topic_events):
                    await self._on_event(payload)
        except aiomqtt.MqttError as exc:
            self._closed = exc
            self._fail_pending(AppConnectionError(f"connection lost: {exc}"))
            if self._client is not None:
                log.warning("app.connection_lost", client_id=self.client_id, error=str(exc))

    def _on_response(self, payload: bytes) -> None:
        try:
            response = parse_body(AppResponse, decode_json(payload), where="response")
        except ProtocolError as exc:
            self.responses_unmatched += 1
            log.warning("app.bad_response", client_id=self.client_id, reason=exc.reason.value)
            return
        future = self._pending.get(response.id)
        if future is None or future.done():
            self.responses_unmatched += 1  # a late answer to a request that timed out, or a duplicate
            return
        future.set_result(response)

    async def _on_event(self, payload: bytes) -> None:
        try:
            event = parse_body(PushEvent, decode_json(payload), where="event")
        except ProtocolError as exc:
            log.warning("app.bad_event", client_id=self.client_id, reason=exc.reason.value)
            return
        if event.type == PushEventType.COMMAND_PROGRESS:
            with contextlib.suppress(AppProtocolError):
                info = CommandInfo.from_result(event.data)
                async with self._state_changed:
                    self._remember(info)
                    self._state_changed.notify_all()
        if self._events.full():
            self._events.get_nowait()  # keep the newest: drop the oldest, and count it
            self.events_dropped += 1
        self._events.put_nowait(event)

    def _remember(self, info: CommandInfo) -> None:
        current = self._states.get(info.command_id)
        if current is not None and current.state.is_final:
            return  # final states never change; a late progress event must not undo one
        self._states[info.command_id] = info
        self._states.move_to_end(info.command_id)
        while len(self._states) > _STATES_KEPT:
            self._states.popitem(last=False)

    def _fail_pending(self, error: Exception) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
