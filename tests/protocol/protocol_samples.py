"""Canonical example messages of the wire contract, shared by the protocol tests and docs/protocol.md.

Run `python tests/protocol/protocol_samples.py` to print the examples as the Markdown blocks the docs hold;
`test_protocol_docs.py` checks every block of the docs against the models.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel

from tcu_sim.clock import VirtualClock
from tcu_sim.protocol import (
    CLOUD,
    AppError,
    AppRequest,
    AppResponse,
    AuxHeating,
    AuxState,
    Command,
    CommandOp,
    CommandResult,
    ConnectionInfo,
    ControlAction,
    ControlMessage,
    ControlResult,
    DoorName,
    Doors,
    DoorState,
    ErrorCode,
    Event,
    EventType,
    FailureReason,
    Health,
    KeySet,
    MessageType,
    OnOff,
    ParkingPosition,
    Position,
    PrivacyMode,
    PushEvent,
    PushEventType,
    RejectReason,
    ResultState,
    Signer,
    SigningKey,
    StatusSnapshot,
    Trip,
    TripSample,
    Windows,
    WindowState,
)

VIN = "VSSZZZKLZMR012345"
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z, the VirtualClock default

CLOSED = DoorState(open=False, locked=True)


def status_parked() -> StatusSnapshot:
    """A parked, locked car with its position."""
    return StatusSnapshot(
        updated_at=T0,
        connection=ConnectionInfo(online=True, signal_pct=78),
        privacy_mode=PrivacyMode.OFF,
        ignition=OnOff.OFF,
        moving=False,
        locked=True,
        doors=Doors(
            front_left=CLOSED, front_right=CLOSED, rear_left=CLOSED, rear_right=CLOSED, trunk=CLOSED, hood=CLOSED
        ),
        windows=Windows(
            front_left=WindowState.CLOSED,
            front_right=WindowState.CLOSED,
            rear_left=WindowState.CLOSED,
            rear_right=WindowState.CLOSED,
        ),
        lights=OnOff.OFF,
        parking_position=ParkingPosition(lat=41.3874, lon=2.1686, parked_at=T0 - 3600),
        aux_heating=AuxHeating(state=AuxState.HEATING, remaining_min=25, target_temperature_c=21.5),
        battery_12v_v=12.4,
        fuel_level_pct=63.5,
        range_km=540.0,
        odometer_km=12873.4,
        health=Health(warnings=[], inspection_due_days=212, oil_service_due_km=8400),
    )


def status_driving() -> StatusSnapshot:
    """A car on the move: no parking position, unlocked, a window open, a health warning."""
    open_door = DoorState(open=False, locked=False)
    return StatusSnapshot(
        updated_at=T0 + 60,
        connection=ConnectionInfo(online=True, signal_pct=41),
        privacy_mode=PrivacyMode.NO_POSITION,
        ignition=OnOff.ON,
        moving=True,
        locked=False,
        doors=Doors(
            front_left=open_door,
            front_right=open_door,
            rear_left=open_door,
            rear_right=open_door,
            trunk=open_door,
            hood=open_door,
        ),
        windows=Windows(
            front_left=WindowState.OPEN,
            front_right=WindowState.CLOSED,
            rear_left=WindowState.CLOSED,
            rear_right=WindowState.CLOSED,
        ),
        lights=OnOff.ON,
        parking_position=None,
        aux_heating=AuxHeating(state=AuxState.OFF, remaining_min=0, target_temperature_c=None),
        battery_12v_v=14.1,
        fuel_level_pct=62.0,
        range_km=528.5,
        odometer_km=12880.9,
        health=Health(warnings=["tyre_pressure_low"], inspection_due_days=212, oil_service_due_km=8393),
    )


def events() -> list[Event]:
    """One event of each type, with the fields that type carries."""
    at = T0 + 120
    extra: dict[EventType, dict[str, Any]] = {
        EventType.DOOR_OPENED: {"door": DoorName.FRONT_LEFT},
        EventType.DOOR_CLOSED: {"door": DoorName.TRUNK},
        EventType.PRIVACY_CHANGED: {"privacy_mode": PrivacyMode.MAX},
        EventType.PAIRING_CODE_ENTERED: {"pairing_code": "48213907"},
        EventType.INFOTAINMENT_LOGIN: {"email": "driver@example.com", "password": "correct horse battery"},
        EventType.NOTIFICATION_SHOWN: {"message": "You are now the primary user of this vehicle."},
        EventType.ECALL: {"position": Position(lat=41.3874, lon=2.1686), "detail": "airbag deployed"},
        EventType.PARKED: {"position": Position(lat=41.3874, lon=2.1686)},
        EventType.BATTERY_LOW: {"detail": "12 V battery at 11.6 V"},
        EventType.TRIP: {"trip": trip()},
        EventType.HEALTH_WARNING: {"warning": "tyre_pressure_low"},
        EventType.BREAKDOWN_CALL: {"position": Position(lat=41.4036, lon=2.1744), "detail": "standing"},
    }
    return [Event(type=t, at=at, **extra.get(t, {})) for t in EventType]


def trip() -> Trip:
    """A short trip (a sample every 10 s would be many more; these three show the shape)."""
    return Trip(
        started_at=T0 + 60, ended_at=T0 + 240, start=Position(lat=41.3874, lon=2.1686),
        end=Position(lat=41.4036, lon=2.1744), distance_km=1.867, duration_s=180.0, average_speed_kmh=37.3,
        max_speed_kmh=50.0, energy_used=0.108, energy_unit="l",
        samples=[
            TripSample(at=T0 + 60, speed_kmh=50.0, lat=41.3874, lon=2.1686),
            TripSample(at=T0 + 70, speed_kmh=50.0, lat=41.3886, lon=2.169),
            TripSample(at=T0 + 240, speed_kmh=0.0, lat=41.4036, lon=2.1744),
        ],
    )


def commands() -> list[Command]:
    """One command of each op, with typical parameters."""
    params: dict[CommandOp, dict[str, Any]] = {
        CommandOp.HONK_AND_FLASH: {"mode": "flash", "duration_s": 10},
        CommandOp.AUX_HEATING_START: {"duration_min": 30, "target_temperature_c": 21.5},
        CommandOp.VENTILATION_START: {"duration_min": 20},
        CommandOp.INFOTAINMENT_NOTIFY: {"message": "Your CUPRA CONNECT licence ends in 15 days."},
    }
    return [
        Command(command_id=f"cmd-{i:04d}", op=op, params=params.get(op, {})) for i, op in enumerate(CommandOp, start=1)
    ]


def results() -> list[CommandResult]:
    """A result in each state."""
    return [
        CommandResult(command_id="cmd-0002", state=ResultState.ACCEPTED, at=T0 + 1),
        CommandResult(command_id="cmd-0002", state=ResultState.SUCCEEDED, at=T0 + 2),
        CommandResult(
            command_id="cmd-0001",
            state=ResultState.FAILED,
            reason=FailureReason.DOOR_OPEN,
            detail="rear_left is open",
            at=T0 + 2,
        ),
        CommandResult(
            command_id="cmd-0007",
            state=ResultState.REJECTED,
            reason=RejectReason.REPLAYED,
            detail="seq 41 is not above 41",
            at=T0 + 1,
        ),
    ]


def app_requests() -> list[AppRequest]:
    """An app logging in, and sending a command with its S-PIN."""
    return [
        AppRequest(id="req-1", op="login", params={"email": "driver@example.com", "password": "s3cret-Pa55"}),
        AppRequest(
            id="req-2",
            op="command",
            token="sess-2b7e1516",
            params={"vin": VIN, "op": "aux_heating.start", "params": {"duration_min": 30}, "spin": "2580"},
        ),
    ]


def app_responses() -> list[AppResponse]:
    """A success, and errors with each kind of detail."""
    return [
        AppResponse.success("req-2", {"command_id": "cmd-0003"}),
        AppResponse.failure(
            "req-3", AppError(code=ErrorCode.SPIN_INCORRECT, message="The S-PIN is not correct.", remaining_tries=2)
        ),
        AppResponse.failure(
            "req-4", AppError(code=ErrorCode.SPIN_LOCKED, message="The S-PIN is locked.", locked_seconds=300)
        ),
        AppResponse.failure(
            "req-5", AppError(code=ErrorCode.RATE_LIMITED, message="Too many requests.", retry_after_s=1.5)
        ),
        AppResponse.failure(
            "req-6", AppError(code=ErrorCode.VEHICLE_NOT_FOUND, message="No such vehicle in your garage.")
        ),
    ]


def push_events() -> list[PushEvent]:
    """One push notification of each type."""
    return [
        PushEvent(
            type=PushEventType.COMMAND_PROGRESS,
            at=T0 + 2,
            data={"command_id": "cmd-0003", "vin": VIN, "state": "in_progress"},
        ),
        PushEvent(type=PushEventType.VEHICLE_CHANGED, at=T0 + 60, data={"vin": VIN}),
        PushEvent(type=PushEventType.MAIL, at=T0 + 5, data={"subject": "Confirm your CUPRA ID"}),
        PushEvent(type=PushEventType.NOTIFICATION, at=T0 + 9, data={"message": "Your car is now locked."}),
        PushEvent(
            type=PushEventType.ALERT,
            at=T0 + 240,
            data={"vin": VIN, "alert": "speed", "at": T0 + 60, "speed_kmh": 140.0, "max_speed_kmh": 120},
        ),
        PushEvent(
            type=PushEventType.ROADSIDE,
            at=T0 + 300,
            data={"vin": VIN, "case_id": "rsa-0001", "opened_at": T0 + 300, "state": "open",
                  "position": {"lat": 41.4036, "lon": 2.1744}, "detail": "standing"},
        ),
    ]


def control_messages() -> list[ControlMessage]:
    """Simulator control: the envelope (the vehicle model defines and checks each action's params)."""
    return [
        ControlMessage(action=ControlAction.LOCK_KEY),
        ControlMessage(action=ControlAction.OPEN_DOOR, params={"door": "rear_left"}),
        ControlMessage(action=ControlAction.OPEN_DOOR, params={"door": "rearleft"}, id="op-5f2a9c1e7b3d"),
    ]


def control_results() -> list[ControlResult]:
    """The car's answers on `sim/{vin}/control/results` to controls that carried an `id`."""
    return [
        ControlResult(id="op-1c9e04d2aa17", ok=True),
        ControlResult(
            id="op-5f2a9c1e7b3d", ok=False,
            error="open_door: door must be one of: front_left, front_right, rear_left, rear_right, trunk, hood",
        ),
    ]


# A fixed key, so that the documented token is reproducible (Ed25519 signatures are deterministic).
DOC_CAR_KEY = SigningKey.from_private_bytes(hashlib.sha256(b"tcu-sim docs car key").digest(), VIN)


def doc_token() -> str:
    """The signed event of the docs (the first example event), issued at T0 by the docs car key."""
    signer = Signer(DOC_CAR_KEY, VIN, VirtualClock(T0))
    return signer.sign(MessageType.EVENT, aud=CLOUD, seq=42, body=events()[0], jti="Zm9yLXRoZS1kb2Nz")


def doc_jwks() -> dict[str, Any]:
    """The fleet JWKS holding the docs car key."""
    return KeySet([DOC_CAR_KEY.public_key()]).to_jwks()


def pretty_json(value: Any, indent: int = 0) -> str:
    """JSON indented by 2, with a nested container on one line when it fits in 110 columns."""
    flat = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    if not isinstance(value, dict | list) or (indent > 0 and indent + len(flat) <= 108):
        return flat
    pad = " " * (indent + 2)
    if isinstance(value, dict):
        items = [f"{pad}{json.dumps(k)}: {pretty_json(v, indent + 2)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    items = [f"{pad}{pretty_json(v, indent + 2)}" for v in value]
    return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"


def block(label: str, data: Any) -> str:
    """A ```json block whose first line is the `// label` comment the docs test reads."""
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    elif isinstance(data, list):
        data = [item.model_dump(mode="json") if isinstance(item, BaseModel) else item for item in data]
    return f"```json\n// {label}\n{pretty_json(data)}\n```\n"


def markdown() -> str:
    """Every example as the Markdown blocks pasted into docs/protocol.md."""
    out = [
        "### Status\n",
        block("model: StatusSnapshot", status_parked()),
        block("model: StatusSnapshot", status_driving()),
        "### Events\n",
        block("models: Event", events()),
        "### Commands\n",
        block("models: Command", commands()),
        "### Results\n",
        block("models: CommandResult", results()),
        "### App requests\n",
        block("models: AppRequest", app_requests()),
        "### App responses\n",
        block("models: AppResponse", app_responses()),
        "### Push events\n",
        block("models: PushEvent", push_events()),
        "### Control\n",
        block("models: ControlMessage", control_messages()),
        "### Control results\n",
        block("models: ControlResult", control_results()),
        "### JWKS\n",
        block("jwks", doc_jwks()),
        "### Token\n",
        f"```text\n// token: {MessageType.EVENT.value} issued at {int(T0)}\n{doc_token()}\n```\n",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    print(markdown())
