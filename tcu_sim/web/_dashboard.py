"""The web dashboard of `tcu-sim up` (SPEC §8, issue 15): the fleet on a map, a table of cars, the live command
trace and fault controls, at `/` of the same server as the cloud's HTTP app API (mounted from `broker.http`).

- Data: `GET /dashboard/api/cars?offset=&limit=` (a page of rows), `GET /dashboard/api/positions` (every car's
  parking position, sampled beyond `MAP_LIMIT`), `GET /dashboard/api/stream` (Server-Sent Events: `car` rows as
  they change, `command` steps, `fleet` counts). Live updates come from the stack's event stream, never from
  polling the cars: changed cars are collected and sent every `flush_s`.
- Controls (`POST /dashboard/api/cars/{vin}/offline|weak-signal|clock-skew|door|clear`,
  `POST /dashboard/api/fleet/latency|black-hole|broker-restart`) change the simulation through the fleet's fault
  layer and the cars' own control path. So: state-changing requests are POST with a JSON body and an `Origin`
  that is this server's own (no cross-site requests); the `Host` must be a loopback name unless an operator
  token is set; with an operator token (required to bind beyond loopback), every dashboard request needs it
  (the `X-Operator-Token` header, or the cookie `POST /dashboard/api/session` sets).
- The page builds every cell with `textContent`, so a VIN, an e-mail or a group name is never read as HTML.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import Annotated, Any, Final, TypeVar

import structlog
from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from broker.http import HttpApi
from tcu_sim.events import (
    BrokerAction,
    CarCommandHandled,
    CarConnection,
    CarControlHandled,
    CommandChanged,
    Event,
    FaultChanged,
)
from tcu_sim.faults import ClearFault, ClockSkewFault, FleetFaults, OfflineFault, WeakSignalFault
from tcu_sim.fleet import ScenarioAction, ScenarioStep
from tcu_sim.protocol import DoorName, encode_json
from tcu_sim.stack import LocalStack

__all__ = ["MAP_LIMIT", "Dashboard"]

log = structlog.get_logger("tcu_sim.web")

#: The most markers the map gets; a bigger fleet is sampled (the table pages through every car).
MAP_LIMIT: Final = 5000
_COOKIE: Final = "tcu_operator"
_LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})
_CSP: Final = (
    "default-src 'self'; img-src 'self' data: https://*.tile.openstreetmap.org; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class OfflineBody(_Body):
    seconds: Annotated[float, Field(gt=0, le=86_400)] = 30


class WeakSignalBody(_Body):
    signal_pct: Annotated[int, Field(ge=0, le=100)] = 15
    seconds: Annotated[float, Field(gt=0, le=86_400)] | None = 60


class ClockSkewBody(_Body):
    skew_s: Annotated[float, Field(ge=-86_400, le=86_400)]


class DoorBody(_Body):
    door: DoorName
    open: bool


class LatencyBody(_Body):
    latency_ms: Annotated[float, Field(ge=0, le=60_000)] = 300
    seconds: Annotated[float, Field(gt=0, le=86_400)] | None = 60


class BlackHoleBody(_Body):
    seconds: Annotated[float, Field(gt=0, le=86_400)] = 20


class SessionBody(_Body):
    token: Annotated[str, Field(min_length=1, max_length=256)]


class Dashboard:
    """The dashboard of a running `LocalStack`, with the cloud's app API mounted: `app` is the ASGI app to serve."""

    def __init__(
        self, stack: LocalStack, api: HttpApi, *, operator_token: str | None = None, flush_s: float = 0.5
    ) -> None:
        self.stack = stack
        self.api = api
        self.operator_token = operator_token
        self.flush_s = flush_s
        self._last: dict[str, str] = {}  # vin -> its newest command step, from the event stream
        self._specs = {spec.vin: spec for spec in stack.cars}
        self.app: ASGIApp = _Guard(self._build(), operator_token)

    def __repr__(self) -> str:
        return f"Dashboard({self.stack.fleet_config.name!r}, operator_token={'set' if self.operator_token else 'none'})"

    # -- data --------------------------------------------------------------------------------------------------
    def _users(self) -> dict[str, str]:
        by_vin: dict[str, list[str]] = {}
        for car in self.stack.users:
            if car.outcome.value != "skipped":
                by_vin.setdefault(car.vin, []).append(f"{car.email} ({car.role.value})")
        return {vin: ", ".join(users) for vin, users in by_vin.items()}

    def row(self, vin: str, users: dict[str, str] | None = None) -> dict[str, Any]:
        """One car as the table shows it."""
        stack = self.stack
        runner = stack.fleet
        session = runner.sessions[vin]
        spec = self._specs[vin]
        snap = session.vehicle.snapshot(stack.clock.now(), online=session.online, signal_pct=session.signal_pct)
        doors = snap.doors.model_dump(mode="json")
        windows = snap.windows.model_dump(mode="json")
        last = stack.commands.last_for(vin)
        last_line = self._last.get(vin) or (f"{last.op} {last.state.value}" if last is not None else "")
        position = session.vehicle.position
        return {
            "vin": vin,
            "model": spec.model.value,
            "group": spec.group,
            "online": session.online,
            "signal_pct": session.signal_pct,
            "locked": snap.locked,
            "doors_open": [name for name, door in doors.items() if door["open"]],
            "unlocked": [name for name, door in doors.items() if not door["locked"]],
            "windows_open": [name for name, state in windows.items() if state == "open"],
            "heater": snap.aux_heating.state.value,
            "battery_12v_v": round(snap.battery_12v_v, 2),
            "moving": snap.moving,
            "lat": position[0],
            "lon": position[1],
            "faults": _faults(runner.faults, session, stack.clock),
            "users": (users if users is not None else self._users()).get(vin, ""),
            "last_command": last_line,
        }

    def header(self) -> dict[str, Any]:
        """The fleet's counts."""
        stack = self.stack
        return {
            "fleet": stack.fleet_config.name,
            "cars": len(stack.cars),
            "online": stack.fleet.online_count,
            "broker": stack.broker.description,
            "cloud": "connected" if stack.cloud.link.connected else "disconnected",
            "operator_token": self.operator_token is not None,
        }

    # -- the app -----------------------------------------------------------------------------------------------
    def _build(self) -> FastAPI:
        app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
        static = resources.files("tcu_sim.web") / "static"

        @app.get("/", include_in_schema=False)
        async def index() -> Response:
            return FileResponse(str(static / "index.html"), headers={"Content-Security-Policy": _CSP,
                                                                     "X-Content-Type-Options": "nosniff"})

        app.mount("/static", StaticFiles(directory=str(static)), name="static")

        @app.get("/dashboard/api/fleet")
        async def fleet() -> dict[str, Any]:
            return self.header()

        @app.get("/dashboard/api/cars")
        async def cars(
            offset: Annotated[int, Query(ge=0)] = 0, limit: Annotated[int, Query(ge=1, le=500)] = 100
        ) -> dict[str, Any]:
            users = self._users()
            page = self.stack.cars[offset:offset + limit]
            return {"total": len(self.stack.cars), "offset": offset,
                    "cars": [self.row(spec.vin, users) for spec in page]}

        @app.get("/dashboard/api/positions")
        async def positions() -> dict[str, Any]:
            sessions = self.stack.fleet.sessions
            specs = self.stack.cars
            shown = specs if len(specs) <= MAP_LIMIT else random.Random(0).sample(specs, MAP_LIMIT)
            out = []
            for spec in shown:
                session = sessions[spec.vin]
                lat, lon = session.vehicle.position
                out.append([spec.vin, round(lat, 6), round(lon, 6), session.online])
            return {"total": len(specs), "sampled": len(shown) < len(specs), "cars": out}

        @app.get("/dashboard/api/commands")
        async def commands() -> dict[str, Any]:
            return {"lines": [t.line() for t in self.stack.commands.recent(50)]}

        @app.get("/dashboard/api/stream")
        async def stream() -> Response:
            return StreamingResponse(self._stream(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

        # -- controls ----------------------------------------------------------------------------------------
        @app.post("/dashboard/api/session")
        async def session(request: Request) -> Response:
            body = await _body(request, SessionBody)
            if isinstance(body, Response):
                return body
            if self.operator_token is None or not hmac.compare_digest(body.token, self.operator_token):
                return _refused("wrong operator token", 401)
            response = JSONResponse({"ok": True})
            response.set_cookie(_COOKIE, body.token, httponly=True, samesite="strict")
            return response

        @app.post("/dashboard/api/cars/{vin}/{action}")
        async def car_control(vin: str, action: str, request: Request) -> Response:
            if vin not in self.stack.fleet.sessions:
                return _refused("no such car in this fleet", 404)
            handler = self._car_actions.get(action)
            if handler is None:
                return _refused("unknown action", 404)
            return await handler(vin, request)

        @app.post("/dashboard/api/fleet/{action}")
        async def fleet_control(action: str, request: Request) -> Response:
            handler = self._fleet_actions.get(action)
            if handler is None:
                return _refused("unknown action", 404)
            return await handler(request)

        app.mount("/", self.api.app)  # the cloud's app API: /api/v1/..., /openapi.json, /api/docs
        return app

    @property
    def _car_actions(self) -> dict[str, Callable[[str, Request], Awaitable[Response]]]:
        return {"offline": self._offline, "weak-signal": self._weak_signal, "clock-skew": self._clock_skew,
                "door": self._door, "clear": self._clear}

    @property
    def _fleet_actions(self) -> dict[str, Callable[[Request], Awaitable[Response]]]:
        return {"latency": self._latency, "black-hole": self._black_hole, "broker-restart": self._broker_restart}

    def _faults(self) -> FleetFaults | None:
        faults = self.stack.fleet.faults
        return faults if isinstance(faults, FleetFaults) else None

    async def _apply(self, vin: str, fault: Any) -> Response:
        faults = self._faults()
        if faults is None:
            return _refused("this run has no fault layer", 409)
        applied = await faults.car(vin).apply(fault, source="dashboard")
        log.info("dashboard.fault", vin=vin, kind=fault.kind.value, applied=applied)
        return JSONResponse({"ok": True, "applied": applied})

    async def _offline(self, vin: str, request: Request) -> Response:
        body = await _body(request, OfflineBody)
        return body if isinstance(body, Response) else await self._apply(vin, OfflineFault(duration_s=body.seconds))

    async def _weak_signal(self, vin: str, request: Request) -> Response:
        body = await _body(request, WeakSignalBody)
        if isinstance(body, Response):
            return body
        return await self._apply(vin, WeakSignalFault(signal_pct=body.signal_pct, duration_s=body.seconds))

    async def _clock_skew(self, vin: str, request: Request) -> Response:
        body = await _body(request, ClockSkewBody)
        return body if isinstance(body, Response) else await self._apply(vin, ClockSkewFault(skew_s=body.skew_s))

    async def _clear(self, vin: str, request: Request) -> Response:
        return await self._apply(vin, ClearFault())

    async def _door(self, vin: str, request: Request) -> Response:
        body = await _body(request, DoorBody)
        if isinstance(body, Response):
            return body
        session = self.stack.fleet.sessions[vin]
        before = session.stats.controls_refused
        if body.open and session.vehicle.locked:
            # What a person at the car does: unlock with the key, then open the door.
            session.handle_control(encode_json({"action": "unlock_key", "params": {}}))
        action = "open_door" if body.open else "close_door"
        session.handle_control(encode_json({"action": action, "params": {"door": body.door.value}}))
        if session.stats.controls_refused > before:
            return _refused("the car refused it", 409)
        return JSONResponse({"ok": True})

    async def _fleet_step(self, step: ScenarioStep) -> Response:
        faults = self._faults()
        if faults is None:
            return _refused("this run has no fault layer", 409)
        before = len(faults.log)
        await faults.apply_step(step, source="dashboard")
        refused = [i.refused for i in list(faults.log.entries)[before:] if i.refused]
        if refused:
            return _refused(str(refused[0]), 409)
        return JSONResponse({"ok": True})

    async def _latency(self, request: Request) -> Response:
        body = await _body(request, LatencyBody)
        if isinstance(body, Response):
            return body
        if self._no_proxy():
            return _refused("this run has no fault proxy: fleet transport faults need `tcu-sim fleet run --proxy`", 409)
        params: dict[str, Any] = {"latency_ms": body.latency_ms}
        step = ScenarioStep(at=0, do=ScenarioAction.LATENCY, params=params, duration=body.seconds)
        return await self._fleet_step(step)

    async def _black_hole(self, request: Request) -> Response:
        body = await _body(request, BlackHoleBody)
        if isinstance(body, Response):
            return body
        if self._no_proxy():
            return _refused("this run has no fault proxy: fleet transport faults need `tcu-sim fleet run --proxy`", 409)
        return await self._fleet_step(ScenarioStep(at=0, do=ScenarioAction.BLACK_HOLE, duration=body.seconds))

    async def _broker_restart(self, request: Request) -> Response:
        faults = self._faults()
        if faults is None or faults.broker is None:
            return _refused("this run's fault layer has no control of the broker (use `tcu-sim fault broker "
                            "restart --state DIR`)", 409)
        await faults.broker_action(ScenarioAction.BROKER_RESTART, None, source="dashboard")
        return JSONResponse({"ok": True})

    def _no_proxy(self) -> bool:
        faults = self._faults()
        return faults is None or faults.backend is None

    # -- live updates --------------------------------------------------------------------------------------------
    async def _stream(self) -> AsyncIterator[str]:
        events = self.stack.events.subscribe(
            CommandChanged, CarConnection, CarCommandHandled, CarControlHandled, FaultChanged, BrokerAction,
            buffer=20_000, name="dashboard.stream",
        )
        try:
            yield "retry: 2000\n: connected\n\n"
            yield _sse("fleet", self.header())
            dirty: set[str] = set()
            loop = asyncio.get_running_loop()
            next_flush = loop.time() + self.flush_s
            last_beat = time.monotonic()
            while True:
                try:
                    event = await events.get(timeout=max(0.001, next_flush - loop.time()))
                    out = self._note(event, dirty)
                    if out is not None:
                        yield out
                    continue
                except TimeoutError:
                    pass
                next_flush = loop.time() + self.flush_s
                if dirty:
                    users = self._users()
                    for vin in sorted(dirty):
                        yield _sse("car", self.row(vin, users))
                    dirty.clear()
                    yield _sse("fleet", self.header())
                elif time.monotonic() - last_beat > 15:
                    yield ": keepalive\n\n"
                last_beat = time.monotonic()
        finally:
            events.close()

    def _note(self, event: Event, dirty: set[str]) -> str | None:
        vin = getattr(event, "vin", None)
        if isinstance(vin, str) and vin in self.stack.fleet.sessions:
            dirty.add(vin)
        elif isinstance(event, FaultChanged) and event.target in self.stack.fleet.sessions:
            dirty.add(event.target)
        if isinstance(event, CommandChanged):
            self._last[event.vin] = f"{event.op} {event.state}"
            line = f"{event.op} {event.vin}: {event.state}" + (f" ({event.reason})" if event.reason else "")
            return _sse("command", {"command_id": event.command_id, "vin": event.vin, "op": event.op,
                                    "state": event.state, "reason": event.reason, "line": line})
        if isinstance(event, BrokerAction):
            return _sse("notice", {"line": f"broker {event.action}"})
        return None


def _faults(faults: Any, session: Any, clock: Any) -> list[str]:
    out: list[str] = []
    car = faults.cars.get(session.vin) if isinstance(faults, FleetFaults) else None
    if car is not None:
        now = faults.clock.monotonic()
        held = sorted(reason for reason, until in car.holds.items() if until > now)
        if held:
            out.append("offline: " + ", ".join(held))
        if car.zone is not None:
            out.append(f"in {car.zone.name}")
        out += car.loops
        if car.skew_s:
            out.append(f"clock {car.skew_s:+g} s")
    if session.signal_pct < 50:
        out.append(f"signal {session.signal_pct}%")
    return out


def _sse(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _refused(message: str, status: int) -> JSONResponse:
    return JSONResponse({"ok": False, "error": message}, status_code=status)


_B = TypeVar("_B", bound=BaseModel)


async def _body(request: Request, model: type[_B]) -> _B | Response:
    raw = await request.body()
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        where = ", ".join(".".join(str(p) for p in e["loc"]) or "body" for e in exc.errors()[:5])
        return _refused(f"invalid request: {where}", 400)


class _Guard:
    """Who may use the dashboard: the `Host` (a loopback name unless an operator token is set), the operator
    token on every `/dashboard/api/` request when one is set, and on every POST an `Origin` of this server and a
    JSON body. The mounted app API (`/api/`, `/openapi.json`) has its own bearer tokens and passes through."""

    def __init__(self, app: ASGIApp, operator_token: str | None) -> None:
        self.app = app
        self.token = operator_token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        path: str = scope["path"]
        host = headers.get("host", "")
        if self.token is None and host.rsplit(":", 1)[0] not in _LOOPBACK_HOSTS:
            await _deny(scope, receive, send, 421, "this dashboard answers only on a loopback address")
            return
        if path.startswith("/dashboard/api/"):
            if self.token is not None and path != "/dashboard/api/session" and not self._has_token(headers):
                await _deny(scope, receive, send, 401, "operator token required")
                return
            if scope["method"] != "GET":
                origin = headers.get("origin")
                if scope["method"] != "POST" or (origin is not None and origin != f"http://{host}"):
                    await _deny(scope, receive, send, 403, "cross-site request refused")
                    return
                if not headers.get("content-type", "").startswith("application/json"):
                    await _deny(scope, receive, send, 415, "send JSON")
                    return
        await self.app(scope, receive, send)

    def _has_token(self, headers: dict[str, str]) -> bool:
        assert self.token is not None
        given = headers.get("x-operator-token")
        if given is None:
            for part in headers.get("cookie", "").split(";"):
                name, _, value = part.strip().partition("=")
                if name == _COOKIE:
                    given = value
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())


async def _deny(scope: Scope, receive: Receive, send: Send, status: int, message: str) -> None:
    await _refused(message, status)(scope, receive, send)

