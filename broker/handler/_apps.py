"""App requests (SPEC §2.5): parse, dispatch by `op` to the domain services, answer.

A request `{id, op, token?, params}` on `app/{client_id}/requests` is decoded with the hardened decoder and
validated; the user is the one named by the session token (the services authenticate it), never by the topic:
the client id only routes the reply to `app/{client_id}/responses`. A refusal of the services (`CloudError`)
becomes `{id, ok: false, error: {code, message, ...details}}`. A request that cannot be read but has an id gets
`INVALID_REQUEST`; one without an id cannot be answered and is counted.

Nothing of a request's params or token is ever logged: the log line names the op, the request id, the client
and the outcome.

Result shapes (what `result` holds per op) are documented on each `_op_*` method.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import structlog

from broker.cloud import CloudError, CloudServices, InvalidRequest, RateLimited, booking_result
from broker.registry import RegistryUnavailable
from tcu_sim.clock import Clock
from tcu_sim.events import AppRequestRefused, EventStream, Source
from tcu_sim.protocol import (
    AppError,
    AppOp,
    AppRequest,
    AppResponse,
    ErrorCode,
    ProtocolError,
    decode_json,
    encode_json,
    parse_body,
)

from ._commands import CommandSender
from ._directory import ClientDirectory
from ._push import command_changed, describe_error
from ._stats import HandlerStats

__all__ = ["AppRequests", "Reply"]

log = structlog.get_logger("broker.handler.apps")

#: What to do after the response went out (e.g. publish the command it created).
AfterReply = Callable[[], Awaitable[None]]

_UNREADABLE: Final = "The request could not be read."
_FAILED: Final = "The request could not be processed. Please try again."


class Reply:
    """A response to publish, and what to do once it is out."""

    __slots__ = ("after", "response")

    def __init__(self, response: AppResponse, after: AfterReply | None = None) -> None:
        self.response = response
        self.after = after

    def payload(self) -> bytes:
        """The response as it travels."""
        return encode_json(self.response.model_dump(mode="json"))


# -- params ----------------------------------------------------------------------------------------------------
def _str(params: Mapping[str, Any], key: str, *, max_len: int = 1024) -> str:
    value = params.get(key)
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise InvalidRequest(f"Parameter '{key}' is required (text).")
    return value


def _opt_str(params: Mapping[str, Any], key: str, *, max_len: int = 1024) -> str | None:
    value = params.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > max_len:
        raise InvalidRequest(f"Parameter '{key}' must be text.")
    return value


def _int(params: Mapping[str, Any], key: str, *, default: int | None = None, lo: int, hi: int) -> int:
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidRequest(f"Parameter '{key}' must be a whole number from {lo} to {hi}.")
    return value


def _number(params: Mapping[str, Any], key: str, *, lo: float, hi: float) -> float:
    value = params.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidRequest(f"Parameter '{key}' must be a number.")
    if not lo <= value <= hi:
        raise InvalidRequest(f"Parameter '{key}' must be from {lo:g} to {hi:g}.")
    return float(value)


def _bool(params: Mapping[str, Any], key: str, *, default: bool) -> bool:
    value = params.get(key, default)
    if not isinstance(value, bool):
        raise InvalidRequest(f"Parameter '{key}' must be true or false.")
    return value


def _dict(params: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = params.get(key, {})
    if not isinstance(value, dict):
        raise InvalidRequest(f"Parameter '{key}' must be an object.")
    return value


def _vin(params: Mapping[str, Any]) -> str:
    # Any text: the services answer VEHICLE_NOT_FOUND for a malformed VIN as for an unknown one.
    return _str(params, "vin", max_len=64)


class AppRequests:
    """Answers app requests through the domain services."""

    def __init__(
        self,
        *,
        services: CloudServices,
        sender: CommandSender,
        directory: ClientDirectory,
        stats: HandlerStats,
        events: EventStream,
        clock: Clock,
        max_bytes: int = 65_536,
    ) -> None:
        self._s = services
        self._events = events
        self._clock = clock
        self._sender = sender
        self._directory = directory
        self._stats = stats
        self._max_bytes = max_bytes
        self._ops: dict[str, Callable[[str, AppRequest], Awaitable[Reply | dict[str, Any]]]] = {
            AppOp.REGISTER: self._op_register,
            AppOp.VERIFY_EMAIL: self._op_verify_email,
            AppOp.LOGIN: self._op_login,
            AppOp.LOGOUT: self._op_logout,
            AppOp.CHANGE_PASSWORD: self._op_change_password,
            AppOp.CHANGE_SPIN: self._op_change_spin,
            AppOp.SET_REAUTH_TIMEOUT: self._op_set_reauth_timeout,
            AppOp.MAILBOX: self._op_mailbox,
            AppOp.ADD_VEHICLE: self._op_add_vehicle,
            AppOp.REMOVE_VEHICLE: self._op_remove_vehicle,
            AppOp.LIST_VEHICLES: self._op_list_vehicles,
            AppOp.VEHICLE_STATUS: self._op_vehicle_status,
            AppOp.INVITE_SECONDARY: self._op_invite_secondary,
            AppOp.REMOVE_SECONDARY: self._op_remove_secondary,
            AppOp.COMMAND: self._op_command,
            AppOp.COMMAND_STATUS: self._op_command_status,
            AppOp.DRIVING_DATA: self._op_driving_data,
            AppOp.HEALTH_REPORT: self._op_health_report,
            AppOp.ROADSIDE_STATUS: self._op_roadside_status,
            AppOp.SPEED_ALERT_SET: self._op_speed_alert_set,
            AppOp.SPEED_ALERT_GET: self._op_speed_alert_get,
            AppOp.SPEED_ALERT_DELETE: self._op_speed_alert_delete,
            AppOp.AREA_ALERT_SET: self._op_area_alert_set,
            AppOp.AREA_ALERT_GET: self._op_area_alert_get,
            AppOp.AREA_ALERT_DELETE: self._op_area_alert_delete,
            AppOp.SERVICE_SCHEDULING_BOOK: self._op_service_scheduling_book,
            AppOp.SERVICE_SCHEDULING_LIST: self._op_service_scheduling_list,
            AppOp.SERVICE_SCHEDULING_CANCEL: self._op_service_scheduling_cancel,
            AppOp.LICENCE_STATUS: self._op_licence_status,
            AppOp.LICENCE_RENEW: self._op_licence_renew,
            AppOp.LICENCE_CANCEL: self._op_licence_cancel,
        }

    def __repr__(self) -> str:
        return f"AppRequests(ops={len(self._ops)}, answered={sum(self._stats.requests.values())})"

    @property
    def ops(self) -> frozenset[str]:
        """Every op answered."""
        return frozenset(self._ops)

    # -- one request -----------------------------------------------------------------------------------------
    async def handle(self, client_id: str, payload: bytes) -> Reply | None:
        """The reply to one request payload, or None when it cannot be answered (no readable id)."""
        try:
            request = parse_body(AppRequest, decode_json(payload, max_bytes=self._max_bytes), where="request")
        except ProtocolError as exc:
            request_id = _readable_id(payload, self._max_bytes)
            self._stats.errors[ErrorCode.INVALID_REQUEST.value] += 1
            log.warning("app.unreadable", client_id=client_id, request_id=request_id, reason=exc.reason.value)
            self._refused(client_id, "?", ErrorCode.INVALID_REQUEST.value, request_id)
            if request_id is None:
                self._stats.requests_unanswerable += 1
                return None
            return Reply(AppResponse.failure(request_id, AppError(code=ErrorCode.INVALID_REQUEST, message=_UNREADABLE)))
        return await self.dispatch(client_id, request)

    async def dispatch(self, client_id: str, request: AppRequest) -> Reply:
        """Run one parsed request."""
        log_ = log.bind(client_id=client_id, request_id=request.id, op=request.op[:64])
        handler = self._ops.get(request.op)
        self._stats.requests[request.op if handler is not None else "?"] += 1
        try:
            if handler is None:
                raise InvalidRequest("Unknown operation.")
            outcome = await handler(client_id, request)
        except CloudError as exc:
            return self._error(log_, client_id, request, exc.to_app_error())
        except RegistryUnavailable as exc:
            # The store is down for a moment: the app may retry the same request id (commands are idempotent).
            log_.error("app.failed", **describe_error(exc))
            return self._error(log_, client_id, request, RateLimited(1.0).to_app_error())
        except Exception as exc:
            # A bug, never the caller's fault; log where, never the request's content.
            self._stats.handler_errors += 1
            log_.error("app.failed", **describe_error(exc))
            return self._error(log_, client_id, request, AppError(code=ErrorCode.INVALID_REQUEST, message=_FAILED))
        reply = outcome if isinstance(outcome, Reply) else Reply(AppResponse.success(request.id, outcome))
        log_.info("app.answered", ok=True)
        return reply

    def _error(self, log_: Any, client_id: str, request: AppRequest, error: AppError) -> Reply:
        self._stats.errors[error.code.value] += 1
        log_.info("app.answered", ok=False, code=error.code.value)
        self._refused(client_id, request.op if request.op in self._ops else "?", error.code.value, request.id)
        return Reply(AppResponse.failure(request.id, error))

    def _refused(self, client_id: str, op: str, code: str, request_id: str | None) -> None:
        self._events.publish(
            AppRequestRefused(
                at=self._clock.now(), source=Source.CLOUD, client_id=client_id, op=op, code=code,
                request_id=request_id,
            )
        )

    # -- account ---------------------------------------------------------------------------------------------
    async def _op_register(self, client_id: str, r: AppRequest) -> dict[str, Any]:
        """`{}` whether or not the address was taken (R1)."""
        p = r.params
        await self._s.accounts.register(_str(p, "email", max_len=254), _str(p, "password"), _str(p, "spin", max_len=16))
        return {}

    async def _op_verify_email(self, client_id: str, r: AppRequest) -> dict[str, Any]:
        """`{verified: true}`."""
        await self._s.accounts.verify_email(_str(r.params, "code", max_len=256))
        return {"verified": True}

    async def _op_login(self, client_id: str, r: AppRequest) -> dict[str, Any]:
        """`{token, user_id, email, verified}`."""
        p = r.params
        login = await self._s.accounts.login(_str(p, "email", max_len=254), _str(p, "password"))
        await self._directory.bind_user(login.user_id, client_id)
        return login.as_result()

    async def _op_logout(self, client_id: str, r: AppRequest) -> dict[str, Any]:
        """`{}`."""
        await self._s.accounts.logout(r.token)
        return {}

    async def _op_change_password(self, client_id: str, r: AppRequest) -> dict[str, Any]:
        """`{sessions_ended}`: every other session of the user ended (R17)."""
        p = r.params
        ended = await self._s.accounts.change_password(r.token, _str(p, "old_password"), _str(p, "new_password"))
        return {"sessions_ended": ended}

    async def _op_change_spin(self, client_id: str, r: AppRequest) -> dict[str, Any]:
        """`{}`."""
        p = r.params
        await self._s.accounts.change_spin(
            r.token, _opt_str(p, "old_spin", max_len=16), _str(p, "new_spin", max_len=16)
        )
        return {}

    async def _op_set_reauth_timeout(self, client_id: str, r: AppRequest) -> dict[str, Any]:
        """`{minutes}` (5, 10, 15 or null)."""
        minutes = r.params.get("minutes")
        if minutes is not None and (isinstance(minutes, bool) or not isinstance(minutes, int)):
            raise InvalidRequest("Parameter 'minutes' must be 5, 10, 15 or null.")
        await self._s.accounts.set_reauth_timeout(r.token, minutes)
        return {"minutes": minutes}

    async def _op_mailbox(self, client_id: str, r: AppRequest) -> dict[str, Any]:
        """`{mails: [{id, at, to, subject, body}]}`, oldest first."""
        mails = await self._s.accounts.mailbox(r.token)
        return {"mails": [{"id": m.id, "at": m.at, "to": m.to, "subject": m.subject, "body": m.body} for m in mails]}

    # -- garage ----------------------------------------------------------------------------------------------
    async def _op_add_vehicle(self, client_id: str, r: AppRequest) -> dict[str, Any]:
        """`{vin, method: tkov | pairing_code, pairing_code?, expires_at?}`."""
        p = r.params
        accept = p.get("accept_terms", False)
        added = await self._s.garage.add_vehicle(r.token, _vin(p), accept is True)
        return added.as_result()

    async def _op_remove_vehicle(self, client_id: str, r: AppRequest) -> dict[str, Any]:
        """`{}`."""
        await self._s.garage.remove_vehicle(r.token, _vin(r.params))
        return {}

    async def _op_list_vehicles(self, client_id: str, r: AppRequest) -> dict[str, Any]:
        """`{vehicles: [{vin, model, equipment, role, state, method}]}`."""
        garage = await self._s.garage.list_vehicles(r.token)
        return {"vehicles": [entry.as_result() for entry in garage]}

    async def _op_vehicle_status(self, client_id: str, r: AppRequest) -> dict[str, Any]:
        """`{vin, online, privacy_mode, updated_at, status}` (`status` is the last snapshot, or null)."""
        vin = _vin(r.params)
        status = await self._s.vehicles.vehicle_status(r.token, vin)  # session, garage, rights, licence, privacy
        state = await self._s.registry.get_vehicle_state(vin)
        return {
            "vin": vin,
            "online": None if state is None else state.online,
            "privacy_mode": None if state is None else state.privacy_mode,
            "updated_at": None if state is None else state.updated_at,
            "status": status,
        }

    async def _op_invite_secondary(self, client_id: str, r: AppRequest) -> dict[str, Any]:
        """`{}` whether or not the address has a CUPRA ID."""
        await self._s.garage.invite_secondary(r.token, _vin(r.params), _str(r.params, "email", max_len=254))
        return {}

    async def _op_remove_secondary(self, client_id: str, r: AppRequest) -> dict[str, Any]:
        """`{}`."""
        await self._s.garage.remove_secondary(r.token, _vin(r.params), _str(r.params, "email", max_len=254))
        return {}

    # -- commands --------------------------------------------------------------------------------------------
    async def _op_command(self, client_id: str, r: AppRequest) -> Reply:
        """`{command_id, state}`; the signed command goes to the car after the reply. The same request id
        again answers with the same command and sends nothing."""
        p = r.params
        new = await self._s.commands.request(
            r.token, r.id, _vin(p), _str(p, "op", max_len=64), _dict(p, "params"), _opt_str(p, "spin", max_len=16),
            client_id=client_id,
        )
        command = new.command
        await self._directory.bind_user(command.user_id, client_id)
        structlog.contextvars.bind_contextvars(command_id=command.id)
        result = {"command_id": command.id, "state": command.state.value}
        response = AppResponse.success(r.id, result)
        if not new.created:
            return Reply(response)
        self._events.publish(command_changed(command, self._clock.now()))

        async def send() -> None:
            await self._sender.send(command)

        return Reply(response, after=send)

    async def _op_command_status(self, client_id: str, r: AppRequest) -> dict[str, Any]:
        """`{command_id, vin, op, state, reason, detail, created_at, expires_at, history: [{state, at, reason}]}`."""
        view = await self._s.commands.status(r.token, _str(r.params, "command_id", max_len=128))
        return view.as_result()

    # -- services for primary and secondary users (R10) -----------------------------------------------------
    async def _op_driving_data(self, client_id: str, r: AppRequest) -> dict[str, Any]:
        """`{vin, trips: [{trip_id, started_at, ended_at, start, end, distance_km, duration_s, average_speed_kmh,
        max_speed_kmh, energy_used, energy_unit}]}`, newest first (`since`: started at or after; `limit` 1-500)."""
        p = r.params
        since = None if p.get("since") is None else _number(p, "since", lo=0, hi=1e11)
        limit = _int(p, "limit", default=50, lo=1, hi=500)
        return await self._s.services.driving_data(r.token, _vin(p), since, limit)

    async def _op_health_report(self, client_id: str, r: AppRequest) -> dict[str, Any]:
        """`{vin, updated_at, warnings, inspection_due_days, oil_service_due_km, battery_12v_v, fuel_level_pct,
        range_km, odometer_km}` from the car's last status (null values before its first)."""
        return await self._s.services.health_report(r.token, _vin(r.params))

    async def _op_roadside_status(self, client_id: str, r: AppRequest) -> dict[str, Any]:
        """`{vin, cases: [{case_id, opened_at, state, position, detail}]}`, newest first."""
        return await self._s.services.roadside_status(r.token, _vin(r.params))

    # -- primary-only services (R10) -------------------------------------------------------------------------
    async def _op_speed_alert_set(self, client_id: str, r: AppRequest) -> dict[str, Any]:
        """`{vin, speed_alert: {enabled, max_speed_kmh}}`."""
        p = r.params
        vin = _vin(p)
        setting = {
            "enabled": _bool(p, "enabled", default=True),
            "max_speed_kmh": _int(p, "max_speed_kmh", lo=30, hi=250),
        }
        return {"vin": vin, "speed_alert": await self._s.services.set_alert(r.token, vin, "speed", setting)}

    async def _op_speed_alert_get(self, client_id: str, r: AppRequest) -> dict[str, Any]:
        """`{vin, speed_alert: {enabled, max_speed_kmh} | null}`."""
        vin = _vin(r.params)
        return {"vin": vin, "speed_alert": await self._s.services.get_alert(r.token, vin, "speed")}

    async def _op_speed_alert_delete(self, client_id: str, r: AppRequest) -> dict[str, Any]:
        """`{vin, deleted}` (false when there was none)."""
        vin = _vin(r.params)
        return {"vin": vin, "deleted": await self._s.services.delete_alert(r.token, vin, "speed")}

    async def _op_area_alert_set(self, client_id: str, r: AppRequest) -> dict[str, Any]:
        """`{vin, area_alert: {enabled, lat, lon, radius_m}}`."""
        p = r.params
        vin = _vin(p)
        setting = {
            "enabled": _bool(p, "enabled", default=True),
            "lat": _number(p, "lat", lo=-90, hi=90),
            "lon": _number(p, "lon", lo=-180, hi=180),
            "radius_m": _int(p, "radius_m", lo=100, hi=100_000),
        }
        return {"vin": vin, "area_alert": await self._s.services.set_alert(r.token, vin, "area", setting)}

    async def _op_area_alert_get(self, client_id: str, r: AppRequest) -> dict[str, Any]:
        """`{vin, area_alert: {enabled, lat, lon, radius_m} | null}`."""
        vin = _vin(r.params)
        return {"vin": vin, "area_alert": await self._s.services.get_alert(r.token, vin, "area")}

    async def _op_area_alert_delete(self, client_id: str, r: AppRequest) -> dict[str, Any]:
        """`{vin, deleted}` (false when there was none)."""
        vin = _vin(r.params)
        return {"vin": vin, "deleted": await self._s.services.delete_alert(r.token, vin, "area")}

    async def _op_service_scheduling_book(self, client_id: str, r: AppRequest) -> Reply:
        """`{vin, booking: {booking_id, date, workshop, reason, state, created_at, cancelled_at}}`; confirmed by
        mail, and shown in the car's infotainment after the reply."""
        p = r.params
        vin = _vin(p)
        booking = await self._s.services.book(
            r.token, vin, _str(p, "date", max_len=32), _opt_str(p, "workshop", max_len=200),
            _opt_str(p, "reason", max_len=500),
        )
        return self._with_notice(r, {"vin": booking.record.vin, "booking": booking.as_result()},
                                 booking.record.vin, booking.notice)

    async def _op_service_scheduling_list(self, client_id: str, r: AppRequest) -> dict[str, Any]:
        """`{vin, bookings: [...]}` (as `book`), oldest booked first, cancelled ones included."""
        vin = _vin(r.params)
        return {"vin": vin, "bookings": [booking_result(b) for b in await self._s.services.bookings(r.token, vin)]}

    async def _op_service_scheduling_cancel(self, client_id: str, r: AppRequest) -> Reply:
        """`{vin, booking}` in state `cancelled`; confirmed by mail and in the car's infotainment."""
        p = r.params
        booking = await self._s.services.cancel_booking(r.token, _vin(p), _str(p, "booking_id", max_len=128))
        return self._with_notice(r, {"vin": booking.record.vin, "booking": booking.as_result()},
                                 booking.record.vin, booking.notice)

    def _with_notice(self, r: AppRequest, result: dict[str, Any], vin: str, notice: str) -> Reply:
        """The reply, and the car's infotainment told after it (`infotainment.notify`)."""

        async def notify() -> None:
            await self._sender.notify(vin, notice)

        return Reply(AppResponse.success(r.id, result), after=notify)

    # -- licences --------------------------------------------------------------------------------------------
    async def _op_licence_status(self, client_id: str, r: AppRequest) -> dict[str, Any]:
        """`{vin, starts_at, ends_at, valid, problem, purchases: [...]}`."""
        return (await self._s.licences.status(r.token, _vin(r.params))).as_result()

    async def _op_licence_renew(self, client_id: str, r: AppRequest) -> dict[str, Any]:
        """As `licence_status`, after the renewal."""
        years = r.params.get("years", 1)
        if isinstance(years, bool) or not isinstance(years, int):
            raise InvalidRequest("Parameter 'years' must be a whole number.")
        return (await self._s.licences.renew(r.token, _vin(r.params), years)).as_result()

    async def _op_licence_cancel(self, client_id: str, r: AppRequest) -> dict[str, Any]:
        """As `licence_status`, after the cancellation."""
        return (await self._s.licences.cancel(r.token, _vin(r.params))).as_result()


def _readable_id(payload: bytes, max_bytes: int) -> str | None:
    """The `id` of a request that failed validation, when it has a usable one (to answer it)."""
    try:
        data = decode_json(payload, max_bytes=max_bytes)
    except ProtocolError:
        return None
    if isinstance(data, dict):
        value = data.get("id")
        if isinstance(value, str) and 1 <= len(value) <= 128:
            return value
    return None
