"""Message bodies of the wire contract (SPEC §2.3-§2.5): pydantic models, frozen, refusing unknown fields.

Models validate in strict mode (a JSON `"true"` is not a boolean, `1.0` is not an integer) except that enum
fields accept their string values, which is how they travel in JSON. Optional fields that are unset are left
out of the JSON of events, results and app messages (their shape varies by type); a status snapshot always
carries every field, with `null` where a value is absent.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, Final, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    SerializerFunctionWrapHandler,
    Strict,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ._errors import ProtocolError, RefusalReason

__all__ = [
    "COMMAND_PARAMS",
    "MAX_TRIP_SAMPLES",
    "TRIP_SAMPLE_S",
    "AppError",
    "AppRequest",
    "AppResponse",
    "AuxHeating",
    "AuxHeatingParams",
    "AuxState",
    "Command",
    "CommandOp",
    "CommandResult",
    "CommandState",
    "ConnectionInfo",
    "ControlAction",
    "ControlMessage",
    "ControlResult",
    "DoorName",
    "DoorState",
    "Doors",
    "EmptyParams",
    "ErrorCode",
    "Event",
    "EventType",
    "FailureReason",
    "Health",
    "HonkMode",
    "HonkParams",
    "NotifyParams",
    "OnOff",
    "ParkingPosition",
    "Position",
    "PrivacyMode",
    "PushEvent",
    "PushEventType",
    "RejectReason",
    "ResultState",
    "StatusSnapshot",
    "Trip",
    "TripSample",
    "VentilationParams",
    "WindowName",
    "WindowState",
    "Windows",
    "command_params",
    "format_validation_error",
    "parse_body",
]

M = TypeVar("M", bound=BaseModel)

# Enum fields accept their string value even though the models are strict (JSON carries enums as strings).
_LAX = Strict(False)
_ID_MAX = 128
_TEXT_MAX = 1000  # == ProtocolError.MAX_DETAIL: a refusal's detail always fits a result's detail
_ERRORS_SHOWN = 5


# --------------------------------------------------------------------------------------------------- enums


class PrivacyMode(StrEnum):
    """The car's privacy level: `max` sends nothing but what the law requires (eCall)."""

    OFF = "off"
    NO_POSITION = "no_position"
    MAX = "max"


class OnOff(StrEnum):
    """A switch (ignition, lights)."""

    ON = "on"
    OFF = "off"


class WindowState(StrEnum):
    """A window is open or closed."""

    OPEN = "open"
    CLOSED = "closed"


class AuxState(StrEnum):
    """What the auxiliary heater/ventilation is doing."""

    OFF = "off"
    HEATING = "heating"
    VENTILATION = "ventilation"


class CommandOp(StrEnum):
    """Remote commands the cloud sends to a car (SPEC §2.3)."""

    LOCK = "lock"
    UNLOCK = "unlock"
    HONK_AND_FLASH = "honk_and_flash"
    AUX_HEATING_START = "aux_heating.start"
    AUX_HEATING_STOP = "aux_heating.stop"
    VENTILATION_START = "ventilation.start"
    VENTILATION_STOP = "ventilation.stop"
    STATUS_REFRESH = "status.refresh"
    INFOTAINMENT_NOTIFY = "infotainment.notify"


class ResultState(StrEnum):
    """What a car reports about a command: `accepted`, then one final state."""

    ACCEPTED = "accepted"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"

    @property
    def is_final(self) -> bool:
        """True for every state but `accepted`."""
        return self is not ResultState.ACCEPTED


class FailureReason(StrEnum):
    """Why a car could not carry out a command it accepted (result state `failed`)."""

    DOOR_OPEN = "door_open"
    VEHICLE_MOVING = "vehicle_moving"
    IGNITION_ON = "ignition_on"
    BATTERY_LOW = "battery_low"
    UNSUPPORTED_BY_VEHICLE = "unsupported_by_vehicle"
    PRIVACY_MODE = "privacy_mode"


class RejectReason(StrEnum):
    """Why a car refused a command message before acting on it (result state `rejected`)."""

    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_KEY = "unknown_key"
    WRONG_AUDIENCE = "wrong_audience"
    EXPIRED = "expired"
    REPLAYED = "replayed"
    MALFORMED = "malformed"


class CommandState(StrEnum):
    """A command's lifecycle as the app sees it; final states never change."""

    QUEUED = "queued"
    DELIVERED = "delivered"
    IN_PROGRESS = "in_progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    TIMED_OUT = "timed_out"

    @property
    def is_final(self) -> bool:
        """True for succeeded, failed, rejected and timed_out."""
        return self in _FINAL_COMMAND_STATES


_FINAL_COMMAND_STATES: Final = frozenset(
    {CommandState.SUCCEEDED, CommandState.FAILED, CommandState.REJECTED, CommandState.TIMED_OUT}
)


class ErrorCode(StrEnum):
    """Error codes of the app API (SPEC §2.5); an app shows a message for each."""

    UNAUTHENTICATED = "UNAUTHENTICATED"
    SESSION_EXPIRED = "SESSION_EXPIRED"
    INVALID_REQUEST = "INVALID_REQUEST"
    USER_NOT_VERIFIED = "USER_NOT_VERIFIED"
    TERMS_AND_CONDITIONS_NOT_ACCEPTED = "TERMS_AND_CONDITIONS_NOT_ACCEPTED"
    VEHICLE_NOT_FOUND = "VEHICLE_NOT_FOUND"
    INSUFFICIENT_RIGHTS = "INSUFFICIENT_RIGHTS"
    GARAGE_FULL = "GARAGE_FULL"
    PAIRING_CODE_INVALID = "PAIRING_CODE_INVALID"
    PAIRING_CODE_EXPIRED = "PAIRING_CODE_EXPIRED"
    SPIN_REQUIRED = "SPIN_REQUIRED"
    SPIN_INCORRECT = "SPIN_INCORRECT"
    SPIN_LOCKED = "SPIN_LOCKED"
    SPIN_POLICY = "SPIN_POLICY"
    LICENSE_EXPIRED = "LICENSE_EXPIRED"
    LICENSE_MISSING = "LICENSE_MISSING"
    PRIVACY_MODE = "PRIVACY_MODE"
    VEHICLE_OFFLINE = "VEHICLE_OFFLINE"
    UNSUPPORTED_BY_VEHICLE = "UNSUPPORTED_BY_VEHICLE"
    RATE_LIMITED = "RATE_LIMITED"
    CANCELLATION_PERIOD_OVER = "CANCELLATION_PERIOD_OVER"


class DoorName(StrEnum):
    """The doors (and lids) a status reports."""

    FRONT_LEFT = "front_left"
    FRONT_RIGHT = "front_right"
    REAR_LEFT = "rear_left"
    REAR_RIGHT = "rear_right"
    TRUNK = "trunk"
    HOOD = "hood"


class WindowName(StrEnum):
    """The windows a status reports."""

    FRONT_LEFT = "front_left"
    FRONT_RIGHT = "front_right"
    REAR_LEFT = "rear_left"
    REAR_RIGHT = "rear_right"


class EventType(StrEnum):
    """Things a car reports as they happen, on `tcu/{vin}/events`."""

    DOOR_OPENED = "door_opened"
    DOOR_CLOSED = "door_closed"
    LOCKED = "locked"
    UNLOCKED = "unlocked"
    IGNITION_ON = "ignition_on"
    IGNITION_OFF = "ignition_off"
    TRIP_STARTED = "trip_started"
    PARKED = "parked"
    AUX_HEATING_STARTED = "aux_heating_started"
    AUX_HEATING_FINISHED = "aux_heating_finished"
    VENTILATION_STARTED = "ventilation_started"
    VENTILATION_FINISHED = "ventilation_finished"
    BATTERY_LOW = "battery_low"
    ECALL = "ecall"
    PRIVACY_CHANGED = "privacy_changed"
    PAIRING_CODE_ENTERED = "pairing_code_entered"
    TKOV_COMPLETED = "tkov_completed"
    INFOTAINMENT_LOGIN = "infotainment_login"
    FACTORY_RESET = "factory_reset"
    NOTIFICATION_SHOWN = "notification_shown"
    TRIP = "trip"  # a trip ended: its summary and the speed and position samples taken while driving
    HEALTH_WARNING = "health_warning"  # a new warning of the health report (battery, tyres, service due, ...)
    BREAKDOWN_CALL = "breakdown_call"  # online roadside assistance asked for from the car


class HonkMode(StrEnum):
    """What `honk_and_flash` does: flash only, or honk and flash."""

    FLASH = "flash"
    HONK_AND_FLASH = "honk_and_flash"


class PushEventType(StrEnum):
    """Kinds of push notification the cloud sends an app on `app/{client_id}/events`."""

    COMMAND_PROGRESS = "command_progress"
    VEHICLE_CHANGED = "vehicle_changed"
    MAIL = "mail"
    NOTIFICATION = "notification"
    ALERT = "alert"  # a speed or area alert fired
    ROADSIDE = "roadside"  # a roadside-assistance case was opened from the car


class ControlAction(StrEnum):
    """Simulator control on `sim/{vin}/control`: what a person in or at the car does, and faults."""

    OPEN_DOOR = "open_door"
    CLOSE_DOOR = "close_door"
    OPEN_WINDOW = "open_window"
    CLOSE_WINDOW = "close_window"
    LOCK_KEY = "lock_key"
    UNLOCK_KEY = "unlock_key"
    IGNITION_ON = "ignition_on"
    IGNITION_OFF = "ignition_off"
    DRIVE_TO = "drive_to"
    SET_PRIVACY = "set_privacy"
    ENTER_PAIRING_CODE = "enter_pairing_code"
    TKOV = "tkov"
    INFOTAINMENT_LOGIN = "infotainment_login"
    FACTORY_RESET = "factory_reset"
    ECALL = "ecall"
    LIGHTS_ON = "lights_on"
    LIGHTS_OFF = "lights_off"
    SET_BATTERY = "set_battery"
    BREAKDOWN_CALL = "breakdown_call"
    FAULT = "fault"


# --------------------------------------------------------------------------------------------------- bases


class _Model(BaseModel):
    """Frozen, strict, no unknown fields, no NaN/Infinity."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)


class _SparseModel(_Model):
    """A model whose unset (None) optional fields are left out of its serialised form."""

    @model_serializer(mode="wrap")
    def _omit_none(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if v is not None}


Id = Annotated[str, Field(min_length=1, max_length=_ID_MAX)]
Text = Annotated[str, Field(max_length=_TEXT_MAX)]
Timestamp = Annotated[float, Field(ge=0)]
Latitude = Annotated[float, Field(ge=-90, le=90)]
Longitude = Annotated[float, Field(ge=-180, le=180)]
Temperature = Annotated[float, Field(ge=16, le=29.5, multiple_of=0.5)]
DurationMin = Annotated[int, Field(ge=10, le=60)]


# --------------------------------------------------------------------------------------------------- status


class ConnectionInfo(_Model):
    """The car's mobile-network connection as it reports it."""

    online: bool
    signal_pct: int = Field(ge=0, le=100)


class DoorState(_Model):
    """One door (or trunk, or hood)."""

    open: bool
    locked: bool


class Doors(_Model):
    """Every door of the car."""

    front_left: DoorState
    front_right: DoorState
    rear_left: DoorState
    rear_right: DoorState
    trunk: DoorState
    hood: DoorState

    def get(self, name: DoorName) -> DoorState:
        """The state of the door called `name`."""
        state: DoorState = getattr(self, name.value)
        return state


class Windows(_Model):
    """Every window of the car."""

    front_left: Annotated[WindowState, _LAX]
    front_right: Annotated[WindowState, _LAX]
    rear_left: Annotated[WindowState, _LAX]
    rear_right: Annotated[WindowState, _LAX]

    def get(self, name: WindowName) -> WindowState:
        """The state of the window called `name`."""
        state: WindowState = getattr(self, name.value)
        return state


class Position(_Model):
    """A WGS 84 position in degrees."""

    lat: Latitude
    lon: Longitude


class ParkingPosition(_Model):
    """Where the car was parked, and when."""

    lat: Latitude
    lon: Longitude
    parked_at: Timestamp


class AuxHeating(_Model):
    """The auxiliary heater / ventilation."""

    state: Annotated[AuxState, _LAX]
    remaining_min: int = Field(ge=0)
    target_temperature_c: Temperature | None


class Health(_Model):
    """The vehicle health report; due figures go negative when overdue."""

    warnings: list[Annotated[str, Field(max_length=200)]] = Field(max_length=64)
    inspection_due_days: int
    oil_service_due_km: int


class StatusSnapshot(_Model):
    """Body of `tcu/{vin}/status` (SPEC §2.4): everything the car reports, every field always present."""

    updated_at: Timestamp
    connection: ConnectionInfo
    privacy_mode: Annotated[PrivacyMode, _LAX]
    ignition: Annotated[OnOff, _LAX]
    moving: bool
    locked: bool
    doors: Doors
    windows: Windows
    lights: Annotated[OnOff, _LAX]
    parking_position: ParkingPosition | None
    aux_heating: AuxHeating
    battery_12v_v: float = Field(ge=0, le=30)
    fuel_level_pct: float = Field(ge=0, le=100)
    range_km: float = Field(ge=0)
    odometer_km: float = Field(ge=0)
    health: Health


# --------------------------------------------------------------------------------------------------- events

# Fields an event of a given type must carry (others stay optional).
EVENT_REQUIRED_FIELDS: Final[Mapping[EventType, tuple[str, ...]]] = {
    EventType.DOOR_OPENED: ("door",),
    EventType.DOOR_CLOSED: ("door",),
    EventType.PRIVACY_CHANGED: ("privacy_mode",),
    EventType.PAIRING_CODE_ENTERED: ("pairing_code",),
    EventType.INFOTAINMENT_LOGIN: ("email", "password"),
    EventType.NOTIFICATION_SHOWN: ("message",),
    EventType.TRIP: ("trip",),
    EventType.HEALTH_WARNING: ("warning",),
}

MAX_TRIP_SAMPLES: Final = 200  # a trip event stays well under the decoders' size limit
TRIP_SAMPLE_S: Final = 10.0  # a driving car samples its speed and position this often


class TripSample(_SparseModel):
    """One moment of a drive: when, how fast, and where (left out when privacy hides positions)."""

    at: Timestamp
    speed_kmh: float = Field(ge=0, le=400)
    lat: Latitude | None = None
    lon: Longitude | None = None


class Trip(_SparseModel):
    """A finished trip (body field `trip` of a `trip` event). Positions are left out in `no_position` privacy.

    `energy_used` is in litres of fuel or kWh of charge (`energy_unit` says which); `samples` are taken every
    `TRIP_SAMPLE_S` seconds and at every change of speed while driving, at most `MAX_TRIP_SAMPLES`."""

    started_at: Timestamp
    ended_at: Timestamp
    start: Position | None = None
    end: Position | None = None
    distance_km: float = Field(ge=0)
    duration_s: float = Field(ge=0)
    average_speed_kmh: float = Field(ge=0)
    max_speed_kmh: float = Field(ge=0)
    energy_used: float = Field(ge=0)
    energy_unit: Annotated[str, Field(pattern=r"^(l|kWh)$")]
    samples: list[TripSample] = Field(default_factory=list, max_length=MAX_TRIP_SAMPLES)


class Event(_SparseModel):
    """Body of `tcu/{vin}/events`: something that happened at `at`, with the fields its type needs.

    `password` (infotainment login) and `pairing_code` never show in a repr; the password travels in clear
    only inside the signed JSON body (`model_dump(mode="json")`).
    """

    type: Annotated[EventType, _LAX]
    at: Timestamp
    door: Annotated[DoorName, _LAX] | None = None
    pairing_code: Annotated[str, Field(min_length=1, max_length=64)] | None = Field(default=None, repr=False)
    email: Annotated[str, Field(min_length=3, max_length=254)] | None = None
    password: Annotated[SecretStr, Field(max_length=1024)] | None = None
    privacy_mode: Annotated[PrivacyMode, _LAX] | None = None
    position: Position | None = None
    message: Text | None = None
    detail: Text | None = None
    trip: Trip | None = None
    warning: Annotated[str, Field(min_length=1, max_length=200)] | None = None

    @model_validator(mode="after")
    def _required_for_type(self) -> Event:
        missing = [name for name in EVENT_REQUIRED_FIELDS.get(self.type, ()) if getattr(self, name) is None]
        if missing:
            raise PydanticCustomError(
                "event_fields",
                "a {type} event needs {missing}",
                {"type": self.type.value, "missing": ", ".join(missing)},
            )
        return self

    @field_serializer("password", when_used="json")
    def _password_in_clear(self, value: SecretStr | None) -> str | None:
        # Only the JSON form (what gets signed) carries the password; repr and python dumps keep it hidden.
        return None if value is None else value.get_secret_value()


# --------------------------------------------------------------------------------------------------- commands


class HonkParams(_Model):
    """Parameters of `honk_and_flash`."""

    mode: Annotated[HonkMode, _LAX] = HonkMode.HONK_AND_FLASH
    duration_s: int = Field(default=10, ge=1, le=30)


class AuxHeatingParams(_Model):
    """Parameters of `aux_heating.start`: 10-60 minutes, 16-29.5 °C in 0.5 steps."""

    duration_min: DurationMin = 30
    target_temperature_c: Temperature = 22.0


class VentilationParams(_Model):
    """Parameters of `ventilation.start`: 10-60 minutes."""

    duration_min: DurationMin = 30


class NotifyParams(_Model):
    """Parameters of `infotainment.notify`: the text the infotainment shows."""

    message: Annotated[str, Field(min_length=1, max_length=_TEXT_MAX)]


class EmptyParams(_Model):
    """Parameters of the commands that take none."""


COMMAND_PARAMS: Final[Mapping[CommandOp, type[_Model]]] = {
    CommandOp.LOCK: EmptyParams,
    CommandOp.UNLOCK: EmptyParams,
    CommandOp.HONK_AND_FLASH: HonkParams,
    CommandOp.AUX_HEATING_START: AuxHeatingParams,
    CommandOp.AUX_HEATING_STOP: EmptyParams,
    CommandOp.VENTILATION_START: VentilationParams,
    CommandOp.VENTILATION_STOP: EmptyParams,
    CommandOp.STATUS_REFRESH: EmptyParams,
    CommandOp.INFOTAINMENT_NOTIFY: NotifyParams,
}


def command_params(op: CommandOp | str, params: Mapping[str, Any]) -> BaseModel:
    """The validated parameters of a command (`HonkParams`, `AuxHeatingParams`, ... or `EmptyParams`).

    Raises ProtocolError(MALFORMED) naming the parameter and what is wrong with it.
    """
    try:
        model = COMMAND_PARAMS[CommandOp(op)]
    except (ValueError, KeyError):
        raise ProtocolError(RefusalReason.MALFORMED, f"unknown command op {str(op)[:64]!r}") from None
    return parse_body(model, params, where="params")


class Command(_Model):
    """Body of `tcu/{vin}/commands`: one remote command; `params` are validated against `op` on creation."""

    command_id: Id
    op: Annotated[CommandOp, _LAX]
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("params")
    @classmethod
    def _params_fit_op(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        op = info.data.get("op")
        if isinstance(op, CommandOp):  # a bad op is reported on its own field
            # A nested ValidationError is re-raised by pydantic with locations under `params`.
            COMMAND_PARAMS[op].model_validate(value)
        return value


def _reason_from_str(value: Any) -> Any:
    if isinstance(value, str) and not isinstance(value, FailureReason | RejectReason):
        for enum in (FailureReason, RejectReason):
            try:
                return enum(value)
            except ValueError:
                pass
        raise PydanticCustomError("result_reason", "unknown result reason {value}", {"value": repr(value[:64])})
    return value


class CommandResult(_SparseModel):
    """Body of `tcu/{vin}/results`: `accepted`, then `succeeded`, `failed` (FailureReason) or `rejected`
    (RejectReason). A failed or rejected result must carry a reason of the matching kind."""

    command_id: Id
    state: Annotated[ResultState, _LAX]
    reason: FailureReason | RejectReason | None = None
    detail: Text | None = None
    at: Timestamp

    _reason_str = field_validator("reason", mode="before")(_reason_from_str)

    @model_validator(mode="after")
    def _reason_fits_state(self) -> CommandResult:
        expected: type[StrEnum] | None = {
            ResultState.FAILED: FailureReason,
            ResultState.REJECTED: RejectReason,
        }.get(self.state)
        if expected is None and self.reason is not None:
            raise PydanticCustomError(
                "result_reason", "a result in state {state} carries no reason", {"state": self.state.value}
            )
        if expected is not None and not isinstance(self.reason, expected):
            raise PydanticCustomError(
                "result_reason",
                "a result in state {state} needs a reason among: {choices}",
                {"state": self.state.value, "choices": ", ".join(m.value for m in expected)},
            )
        return self


# --------------------------------------------------------------------------------------------------- app API


class AppRequest(_SparseModel):
    """A request on `app/{client_id}/requests`. The user is the one named by `token`, never by the topic."""

    id: Id
    op: Annotated[str, Field(min_length=1, max_length=64)]
    # Tokens and params (passwords, S-PINs) are secrets: kept out of reprs.
    token: Annotated[str, Field(max_length=512)] | None = Field(default=None, repr=False)
    params: dict[str, Any] = Field(default_factory=dict, repr=False)


class AppError(_SparseModel):
    """The error of a failed app request: a code an app shows a message for, and details some codes carry."""

    code: Annotated[ErrorCode, _LAX]
    message: Text
    remaining_tries: int | None = Field(default=None, ge=0)
    locked_seconds: int | None = Field(default=None, ge=0)
    retry_after_s: float | None = Field(default=None, ge=0)


class AppResponse(_SparseModel):
    """The response on `app/{client_id}/responses`: `{id, ok: true, result}` or `{id, ok: false, error}`."""

    id: Id
    ok: bool
    result: dict[str, Any] | None = Field(default=None, repr=False)  # may hold a session token
    error: AppError | None = None

    @model_validator(mode="after")
    def _ok_xor_error(self) -> AppResponse:
        if self.ok and self.error is not None:
            raise PydanticCustomError("app_response", "a successful response carries no error", {})
        if not self.ok and self.error is None:
            raise PydanticCustomError("app_response", "a failed response needs an error", {})
        if not self.ok and self.result is not None:
            raise PydanticCustomError("app_response", "a failed response carries no result", {})
        return self

    @classmethod
    def success(cls, request_id: str, result: Mapping[str, Any] | None = None) -> AppResponse:
        """`{id, ok: true, result}`."""
        return cls(id=request_id, ok=True, result=dict(result) if result is not None else {})

    @classmethod
    def failure(cls, request_id: str, error: AppError) -> AppResponse:
        """`{id, ok: false, error}`."""
        return cls(id=request_id, ok=False, error=error)


class PushEvent(_Model):
    """A push notification on `app/{client_id}/events`."""

    type: Annotated[PushEventType, _LAX]
    at: Timestamp
    data: dict[str, Any] = Field(default_factory=dict)


class ControlMessage(_SparseModel):
    """Simulator control on `sim/{vin}/control` (unsigned JSON): an action, its parameters, and an optional `id`."""

    action: Annotated[ControlAction, _LAX]
    params: dict[str, Any] = Field(default_factory=dict, repr=False)  # may hold a password or pairing code
    #: When given, the car answers on `sim/{vin}/control/results` with a `ControlResult` of this id.
    id: str | None = Field(default=None, min_length=1, max_length=_ID_MAX)


class ControlResult(_SparseModel):
    """The car's answer on `sim/{vin}/control/results` to a control that carried an `id`: applied (`ok`), or
    refused and why (`error`: a refused parameter, an action the car cannot do, a refused fault)."""

    id: str = Field(min_length=1, max_length=_ID_MAX)
    ok: bool
    error: str | None = Field(default=None, max_length=_TEXT_MAX)


# --------------------------------------------------------------------------------------------------- parsing


def format_validation_error(exc: ValidationError, where: str = "body") -> str:
    """One line per problem, `<where>.<loc>: <message>`, without echoing the input (it may hold secrets)."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    parts = []
    for error in errors[:_ERRORS_SHOWN]:
        loc = ".".join(str(p) for p in (where, *error["loc"]) if p != "")
        parts.append(f"{loc}: {error['msg']}")
    if len(errors) > _ERRORS_SHOWN:
        parts.append(f"and {len(errors) - _ERRORS_SHOWN} more")
    return "; ".join(parts)


def parse_body(model: type[M], body: Mapping[str, Any], *, where: str = "body") -> M:
    """Validate a decoded message body as `model`; any problem → ProtocolError(MALFORMED, "<loc>: <msg>")."""
    if not isinstance(body, Mapping):
        raise ProtocolError(RefusalReason.MALFORMED, f"{where}: must be a JSON object, got {type(body).__name__}")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise ProtocolError(RefusalReason.MALFORMED, format_validation_error(exc, where)) from None
    except RecursionError:
        raise ProtocolError(RefusalReason.MALFORMED, f"{where}: nested too deeply") from None
