"""The app API over HTTP (SPEC §8): every operation of §2.5 under `/api/v1/`, JSON in and out.

One implementation behind both transports: each route turns its path, body and bearer token into the
`AppRequest` an MQTT app would send and runs it through the cloud's own `AppRequests.dispatch` — the same
registry, rules, results and error codes. What HTTP adds is only the transport's share:

- errors as `application/problem+json` (RFC 9457) with the §2.5 `code` and its details; the status per code is
  `ERROR_STATUS`. A problem document names no VIN or address, so `VEHICLE_NOT_FOUND` for somebody else's car and
  for an unknown VIN are the same bytes;
- the session token from `Authorization: Bearer ...` (`POST /api/v1/login` hands it out);
- `Idempotency-Key` on command creation is the request id of §2.3: the same key again answers with the same
  command, whether it was first sent over MQTT or HTTP;
- push events per user as Server-Sent Events (`GET /api/v1/events`), resumable with `Last-Event-ID`;
- a request size limit, a rate limit per client address and a time limit per request (`_limits`).

Nothing of a body or token is logged; a problem document carries the code and the cloud's message only.
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Annotated, Any, Final

import structlog
from fastapi import APIRouter, Depends, FastAPI, Header, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException

from broker.cloud import CloudError
from broker.handler import LOCAL_CLIENT_PREFIX, CloudHandler, describe_error
from tcu_sim._version import __version__
from tcu_sim.protocol import AppError, AppOp, AppRequest, ErrorCode

from ._events import UserEventLog
from ._limits import BodyLimit, RateLimit
from ._models import (
    ERROR_STATUS,
    AddVehicleBody,
    AreaAlertBody,
    ChangePasswordBody,
    ChangeSpinBody,
    CommandAccepted,
    CommandBody,
    CommandStatus,
    EmailBody,
    LicenceRenewBody,
    LicenceStatus,
    LoginBody,
    LoginResult,
    Mailbox,
    Problem,
    ReauthTimeoutBody,
    RegisterBody,
    Result,
    ServiceBookingBody,
    SpeedAlertBody,
    VehicleAdded,
    VehicleList,
    VehicleStatus,
    VerifyEmailBody,
)

__all__ = ["HTTP_CLIENT_ID", "ApiConfig", "HttpApi", "problem_response"]

log = structlog.get_logger("broker.http")

#: The client id HTTP requests carry into the cloud: pushes for it go to the event log, never to MQTT.
HTTP_CLIENT_ID: Final = f"{LOCAL_CLIENT_PREFIX}http"
PROBLEM: Final = "application/problem+json"
_TIMED_OUT: Final = "The request took too long. Please try again."


class ApiConfig(BaseModel):
    """Limits of the HTTP app API."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_body_bytes: int = Field(default=65_536, ge=1024)
    #: Seconds one request may take in the cloud before it is answered 503 (`RATE_LIMITED`, retry the same id).
    request_timeout_s: float = Field(default=10.0, gt=0)
    #: Requests per client address: a bucket of `rate_capacity`, refilled at `rate_per_s` (on the cloud's clock).
    rate_capacity: float = Field(default=200.0, ge=1)
    rate_per_s: float = Field(default=50.0, gt=0)
    #: Server-Sent Events: a comment line every `sse_heartbeat_s`; a stream ends after `sse_max_s` (the client
    #: reconnects with `Last-Event-ID`, and its token is checked again).
    sse_heartbeat_s: float = Field(default=15.0, gt=0)
    sse_max_s: float = Field(default=300.0, gt=0)
    events_per_user: int = Field(default=256, ge=1)


def problem_response(error: AppError, status: int | None = None) -> JSONResponse:
    """An app API error as `application/problem+json`."""
    code = error.code.value
    status = status or ERROR_STATUS[error.code]
    body: dict[str, Any] = {
        "type": f"urn:tcu-sim:error:{code}", "title": code, "status": status, "detail": error.message, "code": code,
    }
    headers: dict[str, str] = {}
    for key in ("remaining_tries", "locked_seconds", "retry_after_s"):
        value = getattr(error, key)
        if value is not None:
            body[key] = value
    if error.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after_s)))
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _invalid(message: str, status: int = 400) -> JSONResponse:
    return problem_response(AppError(code=ErrorCode.INVALID_REQUEST, message=message[:1000]), status)


_bearer = HTTPBearer(auto_error=False, description="The session token from `POST /api/v1/login`.")
Token = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
Vin = Annotated[str, Path(min_length=1, max_length=64, description="The car's VIN")]


def _token(credentials: HTTPAuthorizationCredentials | None) -> str | None:
    if credentials is None or len(credentials.credentials) > 512:
        return None  # no usable token: the cloud answers UNAUTHENTICATED, as over MQTT
    return credentials.credentials


def _error_responses() -> dict[int | str, dict[str, Any]]:
    by_status: dict[int, list[str]] = {}
    for code, status in ERROR_STATUS.items():
        by_status.setdefault(status, []).append(code.value)
    by_status.setdefault(400, []).append("(malformed body or parameters)")
    extra = {413: ["INVALID_REQUEST (body too large)"], 503: ["RATE_LIMITED (the cloud is busy: retry)"]}
    out: dict[int | str, dict[str, Any]] = {}
    for status, codes in sorted({**by_status, **extra}.items()):
        out[status] = {
            "description": "Codes: " + ", ".join(codes),
            "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
    return out


ERRORS: Final = _error_responses()


def _ok(model: type[BaseModel], status: int = 200) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": model, "description": "The result"}, **ERRORS}


class HttpApi:
    """The HTTP app API of one cloud: `app` (an ASGI app; mount it or serve it) and `events`, fed by the
    cloud's pusher until `close()`."""

    def __init__(self, cloud: CloudHandler, config: ApiConfig | None = None) -> None:
        self.config = config or ApiConfig()
        self.cloud = cloud
        self.events = UserEventLog(per_user=self.config.events_per_user)
        cloud.pusher.listeners.append(self.events.append)
        self.app: FastAPI = _build(self)
        self._closed = False

    def __repr__(self) -> str:
        return f"HttpApi({self.cloud!r}, {self.events!r})"

    def close(self) -> None:
        """Stop logging the cloud's push events."""
        if not self._closed:
            self._closed = True
            self.cloud.pusher.listeners.remove(self.events.append)

    async def call(
        self, op: AppOp, params: Mapping[str, Any] | BaseModel | None = None, *, token: str | None = None,
        request_id: str | None = None, status: int = 200,
    ) -> Response:
        """Run one app request through the cloud's `AppRequests` and answer it as HTTP."""
        if isinstance(params, BaseModel):
            params = params.model_dump(exclude_none=True)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(client_id=HTTP_CLIENT_ID)
        try:
            request = AppRequest(id=request_id or uuid.uuid4().hex, op=op.value, token=token, params=dict(params or {}))
        except ValidationError:
            return _invalid("The request id must be 1 to 128 characters.")
        try:
            async with asyncio.timeout(self.config.request_timeout_s):
                reply = await self.cloud.apps.dispatch(HTTP_CLIENT_ID, request)
        except TimeoutError:
            log.error("http.timed_out", op=op.value, request_id=request.id)
            return problem_response(AppError(code=ErrorCode.RATE_LIMITED, message=_TIMED_OUT, retry_after_s=1.0), 503)
        response = reply.response
        if not response.ok:
            assert response.error is not None  # the model's invariant: not ok has an error
            return problem_response(response.error)
        after = reply.after
        background = None if after is None else BackgroundTask(self._after, after, request.id)
        return JSONResponse(response.result, status_code=status, background=background)

    async def _after(self, after: Callable[[], Awaitable[None]], request_id: str) -> None:
        """What follows the answer (sending the command to the car), bounded like a request."""
        try:
            async with asyncio.timeout(self.config.request_timeout_s):
                await after()
        except Exception as exc:  # the answer is out; the command's state tells the app what became of it
            log.error("http.after_failed", request_id=request_id, **describe_error(exc))

    async def user_of(self, token: str | None) -> str | AppError:
        """The user a session token names (the cloud's rule: revoked, idle and old sessions refused)."""
        try:
            return (await self.cloud.services.accounts.authenticate(token)).user_id
        except CloudError as exc:
            return exc.to_app_error()


def _build(api: HttpApi) -> FastAPI:
    app = _Api(
        title="tcu-sim app API",
        version=__version__,
        description=(
            "The app API of SPEC §2.5 over HTTP: the same operations, rules and error codes as over MQTT. "
            "Errors are application/problem+json with the app API's `code`."
        ),
        docs_url="/api/docs",
        redoc_url=None,
    )
    app.add_middleware(RateLimit, clock=api.cloud.clock, capacity=api.config.rate_capacity, per_s=api.config.rate_per_s)
    app.add_middleware(BodyLimit, max_bytes=api.config.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        # Where and what, never the value sent (it may be a password or an S-PIN).
        parts = []
        for error in exc.errors()[:5]:
            where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
            parts.append(f"{where}: {str(error.get('msg', 'invalid'))[:120]}")
        return _invalid("Invalid request: " + "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else "The request could not be served."
        response = _invalid(detail, exc.status_code)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    app.include_router(_routes(api), prefix="/api/v1")
    return app


class _Api(FastAPI):
    """FastAPI with the document adjusted once (`_openapi`)."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            self.openapi_schema = _openapi(self)
        return self.openapi_schema


def _openapi(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    # Validation errors are answered 400 INVALID_REQUEST as problem documents, not FastAPI's 422.
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            operation.get("responses", {}).pop("422", None)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    components["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in components["Problem"].pop("$defs", {}).items():
        components.setdefault(name, definition)
    return schema


def _routes(api: HttpApi) -> APIRouter:
    r = APIRouter()

    # -- account -----------------------------------------------------------------------------------------------
    @r.post("/register", operation_id="register", tags=["account"], responses=_ok(Result))
    async def register(body: RegisterBody) -> Response:
        """A new CUPRA ID; a verification mail goes to the address (R1, R2)."""
        return await api.call(AppOp.REGISTER, body)

    @r.post("/verify-email", operation_id="verify_email", tags=["account"], responses=_ok(Result))
    async def verify_email(body: VerifyEmailBody) -> Response:
        """The code of the verification mail's link (read it with `GET /api/v1/mailbox` in the simulator)."""
        return await api.call(AppOp.VERIFY_EMAIL, body)

    @r.post("/login", operation_id="login", tags=["account"], responses=_ok(LoginResult))
    async def login(body: LoginBody) -> Response:
        """A session: `token` is the bearer token for every other call."""
        return await api.call(AppOp.LOGIN, body)

    @r.post("/logout", operation_id="logout", tags=["account"], responses=_ok(Result))
    async def logout(credentials: Token) -> Response:
        """End this session."""
        return await api.call(AppOp.LOGOUT, token=_token(credentials))

    @r.post("/change-password", operation_id="change_password", tags=["account"], responses=_ok(Result))
    async def change_password(body: ChangePasswordBody, credentials: Token) -> Response:
        """Every other session of the user ends (R17)."""
        return await api.call(AppOp.CHANGE_PASSWORD, body, token=_token(credentials))

    @r.post("/change-spin", operation_id="change_spin", tags=["account"], responses=_ok(Result))
    async def change_spin(body: ChangeSpinBody, credentials: Token) -> Response:
        """A new S-PIN, with the old one (R4)."""
        return await api.call(AppOp.CHANGE_SPIN, body, token=_token(credentials))

    @r.put("/reauth-timeout", operation_id="set_reauth_timeout", tags=["account"], responses=_ok(Result))
    async def set_reauth_timeout(body: ReauthTimeoutBody, credentials: Token) -> Response:
        """Ask for the password again after 5, 10 or 15 minutes without activity, or never (null)."""
        return await api.call(AppOp.SET_REAUTH_TIMEOUT, {"minutes": body.minutes}, token=_token(credentials))

    @r.get("/mailbox", operation_id="mailbox", tags=["account"], responses=_ok(Mailbox))
    async def mailbox(credentials: Token) -> Response:
        """The simulated e-mails sent to the user, oldest first."""
        return await api.call(AppOp.MAILBOX, token=_token(credentials))

    # -- garage ------------------------------------------------------------------------------------------------
    @r.get("/vehicles", operation_id="list_vehicles", tags=["garage"], responses=_ok(VehicleList))
    async def list_vehicles(credentials: Token) -> Response:
        """The cars of the user's garage."""
        return await api.call(AppOp.LIST_VEHICLES, token=_token(credentials))

    @r.post("/vehicles", operation_id="add_vehicle", tags=["garage"], responses=_ok(VehicleAdded))
    async def add_vehicle(body: AddVehicleBody, credentials: Token) -> Response:
        """Add a car by VIN (R5): two-key verification in the car, or a pairing code to type into it."""
        return await api.call(AppOp.ADD_VEHICLE, body, token=_token(credentials))

    @r.delete("/vehicles/{vin}", operation_id="remove_vehicle", tags=["garage"], responses=_ok(Result))
    async def remove_vehicle(vin: Vin, credentials: Token) -> Response:
        """Remove a car from the garage."""
        return await api.call(AppOp.REMOVE_VEHICLE, {"vin": vin}, token=_token(credentials))

    @r.get("/vehicles/{vin}/status", operation_id="vehicle_status", tags=["garage"], responses=_ok(VehicleStatus))
    async def vehicle_status(vin: Vin, credentials: Token) -> Response:
        """The car's last status snapshot."""
        return await api.call(AppOp.VEHICLE_STATUS, {"vin": vin}, token=_token(credentials))

    @r.post("/vehicles/{vin}/secondary-users", operation_id="invite_secondary", tags=["garage"],
            responses=_ok(Result))
    async def invite_secondary(vin: Vin, body: EmailBody, credentials: Token) -> Response:
        """Nominate a secondary user (primary user only, R10)."""
        return await api.call(AppOp.INVITE_SECONDARY, {"vin": vin, "email": body.email}, token=_token(credentials))

    @r.delete("/vehicles/{vin}/secondary-users/{email}", operation_id="remove_secondary", tags=["garage"],
              responses=_ok(Result))
    async def remove_secondary(
        vin: Vin, email: Annotated[str, Path(min_length=1, max_length=254)], credentials: Token
    ) -> Response:
        """Remove a secondary user (primary user only)."""
        return await api.call(AppOp.REMOVE_SECONDARY, {"vin": vin, "email": email}, token=_token(credentials))

    # -- commands ----------------------------------------------------------------------------------------------
    @r.post("/vehicles/{vin}/commands", operation_id="command", tags=["commands"], status_code=202,
            responses=_ok(CommandAccepted, 202))
    async def command(
        vin: Vin,
        body: CommandBody,
        credentials: Token,
        idempotency_key: Annotated[
            str | None,
            Header(min_length=1, max_length=128, description="The request id of SPEC §2.3: the same key again "
                   "answers with the same command (also one first sent over MQTT with this request id)."),
        ] = None,
    ) -> Response:
        """A remote command for the car (SPEC §2.3); progress comes on `GET /api/v1/events`."""
        params = {"vin": vin, "op": body.op, "params": body.params}
        if body.spin is not None:
            params["spin"] = body.spin
        return await api.call(AppOp.COMMAND, params, token=_token(credentials), request_id=idempotency_key,
                              status=202)

    @r.get("/commands/{command_id}", operation_id="command_status", tags=["commands"], responses=_ok(CommandStatus))
    async def command_status(
        command_id: Annotated[str, Path(min_length=1, max_length=128)], credentials: Token
    ) -> Response:
        """Where a command is, with its history."""
        return await api.call(AppOp.COMMAND_STATUS, {"command_id": command_id}, token=_token(credentials))

    # -- primary-only services -----------------------------------------------------------------------------------
    @r.put("/vehicles/{vin}/speed-alert", operation_id="speed_alert_set", tags=["services"], responses=_ok(Result))
    async def speed_alert(vin: Vin, body: SpeedAlertBody, credentials: Token) -> Response:
        """Alert when the car goes faster (primary user only)."""
        return await api.call(AppOp.SPEED_ALERT_SET, {"vin": vin, **body.model_dump()}, token=_token(credentials))

    @r.put("/vehicles/{vin}/area-alert", operation_id="area_alert_set", tags=["services"], responses=_ok(Result))
    async def area_alert(vin: Vin, body: AreaAlertBody, credentials: Token) -> Response:
        """Alert when the car leaves an area (primary user only)."""
        return await api.call(AppOp.AREA_ALERT_SET, {"vin": vin, **body.model_dump()}, token=_token(credentials))

    @r.post("/vehicles/{vin}/service-bookings", operation_id="service_scheduling_book", tags=["services"],
            responses=_ok(Result))
    async def service_booking(vin: Vin, body: ServiceBookingBody, credentials: Token) -> Response:
        """Book a workshop appointment (primary user only)."""
        return await api.call(AppOp.SERVICE_SCHEDULING_BOOK, {"vin": vin, **body.model_dump(exclude_none=True)},
                              token=_token(credentials))

    # -- licences ----------------------------------------------------------------------------------------------
    @r.get("/vehicles/{vin}/licence", operation_id="licence_status", tags=["licences"], responses=_ok(LicenceStatus))
    async def licence_status(vin: Vin, credentials: Token) -> Response:
        """The car's services licence."""
        return await api.call(AppOp.LICENCE_STATUS, {"vin": vin}, token=_token(credentials))

    @r.post("/vehicles/{vin}/licence/renew", operation_id="licence_renew", tags=["licences"],
            responses=_ok(LicenceStatus))
    async def licence_renew(vin: Vin, body: LicenceRenewBody, credentials: Token) -> Response:
        """Extend the car's services (primary user)."""
        return await api.call(AppOp.LICENCE_RENEW, {"vin": vin, "years": body.years}, token=_token(credentials))

    @r.post("/vehicles/{vin}/licence/cancel", operation_id="licence_cancel", tags=["licences"],
            responses=_ok(LicenceStatus))
    async def licence_cancel(vin: Vin, credentials: Token) -> Response:
        """Cancel the last purchase within 14 days (R15)."""
        return await api.call(AppOp.LICENCE_CANCEL, {"vin": vin}, token=_token(credentials))

    # -- push events -------------------------------------------------------------------------------------------
    @r.get(
        "/events", operation_id="events", tags=["events"],
        responses={
            200: {"description": "Server-Sent Events: `id`, `event` (the push type) and `data` (the push event "
                                 "`{type, at, data}` as JSON)",
                  "content": {"text/event-stream": {"schema": {"type": "string"}}}},
            **ERRORS,
        },
    )
    async def events(
        credentials: Token,
        last_event_id: Annotated[str | None, Header(max_length=20, description="Resume after this event")] = None,
    ) -> Response:
        """The user's push events (command progress, vehicle changes, notifications, mail) as they happen."""
        user = await api.user_of(_token(credentials))
        if isinstance(user, AppError):
            return problem_response(user)
        if last_event_id is not None and not last_event_id.isdigit():
            return _invalid("Last-Event-ID must be an event id from this stream.")
        start = int(last_event_id) if last_event_id is not None else api.events.last_id
        return StreamingResponse(
            _sse(api, user, start), media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return r


async def _sse(api: HttpApi, user_id: str, last_id: int) -> AsyncIterator[str]:
    cfg, log_ = api.config, api.events
    loop = asyncio.get_running_loop()
    deadline = loop.time() + cfg.sse_max_s
    yield "retry: 2000\n: connected\n\n"
    if log_.after(user_id, last_id)[1]:
        yield f"event: gap\ndata: {json.dumps({'after': last_id})}\n\n"
    while (left := deadline - loop.time()) > 0:
        batch = await log_.wait(user_id, last_id, min(cfg.sse_heartbeat_s, left))
        if not batch:
            yield ": keepalive\n\n"
            continue
        for item in batch:
            data = json.dumps(item.event.model_dump(mode="json"), separators=(",", ":"))
            yield f"id: {item.id}\nevent: {item.event.type.value}\ndata: {data}\n\n"
            last_id = item.id
