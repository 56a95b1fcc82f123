"""Message models (SPEC §2.3-§2.5): strict, frozen, refusing unknown fields, naming what is wrong and where."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from protocol_samples import (
    app_requests,
    app_responses,
    commands,
    control_messages,
    events,
    push_events,
    results,
    status_driving,
    status_parked,
)
from pydantic import BaseModel, SecretStr, ValidationError

from tcu_sim.protocol import (
    COMMAND_PARAMS,
    AppError,
    AppRequest,
    AppResponse,
    AuxHeatingParams,
    Command,
    CommandOp,
    CommandResult,
    CommandState,
    ControlAction,
    ControlMessage,
    DoorName,
    EmptyParams,
    ErrorCode,
    Event,
    EventType,
    HonkMode,
    HonkParams,
    NotifyParams,
    ProtocolError,
    PushEvent,
    RefusalReason,
    ResultState,
    StatusSnapshot,
    VentilationParams,
    WindowName,
    WindowState,
    command_params,
    parse_body,
)

SPEC = Path(__file__).resolve().parents[2] / ".." / "shared" / "SPEC.md"


def malformed(model: type[BaseModel], body: Any) -> str:
    with pytest.raises(ProtocolError) as info:
        parse_body(model, body)
    assert info.value.reason is RefusalReason.MALFORMED
    return info.value.detail


@pytest.mark.parametrize(
    "example",
    [
        status_parked(),
        status_driving(),
        *events(),
        *commands(),
        *results(),
        *app_requests(),
        *app_responses(),
        *push_events(),
        *control_messages(),
    ],
    ids=lambda m: type(m).__name__,
)
def test_examples_round_trip_through_json(example: BaseModel) -> None:
    data = example.model_dump(mode="json")
    again = parse_body(type(example), data)
    assert again == example
    assert again.model_dump(mode="json") == data
    assert type(example).model_validate_json(example.model_dump_json()) == example


def test_full_status_snapshot() -> None:
    data = status_parked().model_dump(mode="json")
    assert data.keys() == {
        "updated_at", "connection", "privacy_mode", "ignition", "moving", "locked", "doors", "windows", "lights",
        "parking_position", "aux_heating", "battery_12v_v", "fuel_level_pct", "range_km", "odometer_km", "health",
    }  # fmt: skip
    assert data["doors"].keys() == {d.value for d in DoorName}
    assert data["windows"].keys() == {w.value for w in WindowName}
    status = parse_body(StatusSnapshot, data)
    assert status.doors.get(DoorName.TRUNK).locked is True
    assert status.windows.get(WindowName.FRONT_LEFT) is WindowState.CLOSED
    driving = status_driving().model_dump(mode="json")
    assert driving["parking_position"] is None  # present, as null
    assert driving["aux_heating"]["target_temperature_c"] is None


def test_every_status_field_is_required() -> None:
    data = status_parked().model_dump(mode="json")
    for name in data:
        partial = {k: v for k, v in data.items() if k != name}
        assert f"body.{name}: Field required" in malformed(StatusSnapshot, partial)


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ((), {"extra": 1}, "body.extra: Extra inputs are not permitted"),
        (("doors",), {"sunroof": {"open": False, "locked": True}}, "body.doors.sunroof: Extra inputs"),
        (("connection",), {"bars": 3}, "body.connection.bars: Extra inputs"),
        (("health",), {"tyres": []}, "body.health.tyres: Extra inputs"),
    ],
)
def test_extra_fields_are_refused(path: tuple[str, ...], value: dict[str, Any], expected: str) -> None:
    data = status_parked().model_dump(mode="json")
    target = data
    for key in path:
        target = target[key]
    target.update(value)
    assert expected in malformed(StatusSnapshot, data)


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("doors", "front_left", "open"), "yes", "body.doors.front_left.open: Input should be a valid boolean"),
        (("doors", "front_left", "open"), 1, "body.doors.front_left.open: Input should be a valid boolean"),
        (("moving",), "false", "body.moving: Input should be a valid boolean"),
        (("connection", "signal_pct"), 50.0, "body.connection.signal_pct: Input should be a valid integer"),
        (("connection", "signal_pct"), "50", "body.connection.signal_pct: Input should be a valid integer"),
        (("connection", "signal_pct"), 101, "body.connection.signal_pct: Input should be less than or equal to 100"),
        (("fuel_level_pct",), True, "body.fuel_level_pct: Input should be a valid number"),
        (("privacy_mode",), "partial", "body.privacy_mode: Input should be 'off', 'no_position' or 'max'"),
        (("windows", "rear_left"), "ajar", "body.windows.rear_left: Input should be 'open' or 'closed'"),
        (("parking_position", "lat"), 91, "body.parking_position.lat: Input should be less than or equal to 90"),
        (("health", "warnings"), "none", "body.health.warnings: Input should be a valid list"),
        (("aux_heating", "target_temperature_c"), 21.3, "Input should be a multiple of 0.5"),
    ],
)
def test_wrong_values_name_field_and_problem(path: tuple[str, ...], value: Any, expected: str) -> None:
    data = status_parked().model_dump(mode="json")
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert expected in malformed(StatusSnapshot, data)


def test_integers_are_numbers_for_float_fields() -> None:
    data = status_parked().model_dump(mode="json")
    data["range_km"] = 540
    assert parse_body(StatusSnapshot, data).range_km == 540


def test_models_are_frozen() -> None:
    status = status_parked()
    with pytest.raises(ValidationError):
        status.locked = False  # type: ignore[misc]  # assigning to a frozen model on purpose


def test_parse_body_wants_an_object() -> None:
    assert "body: must be a JSON object, got list" in malformed(StatusSnapshot, [])


def test_many_problems_are_summed_up() -> None:
    detail = malformed(StatusSnapshot, {f"x{i}": i for i in range(20)})
    assert "more" in detail
    assert len(detail) <= ProtocolError.MAX_DETAIL


# ----------------------------------------------------------------------------------------------------- commands


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"duration_min": 10, "target_temperature_c": 16}, None),
        ({"duration_min": 60, "target_temperature_c": 29.5}, None),
        ({"duration_min": 30, "target_temperature_c": 21.5}, None),
        ({}, None),
        ({"duration_min": 9}, "params.duration_min: Input should be greater than or equal to 10"),
        ({"duration_min": 61}, "params.duration_min: Input should be less than or equal to 60"),
        ({"duration_min": 30.0}, "params.duration_min: Input should be a valid integer"),
        ({"target_temperature_c": 15.5}, "params.target_temperature_c: Input should be greater than or equal to 16"),
        ({"target_temperature_c": 30}, "params.target_temperature_c: Input should be less than or equal to 29.5"),
        ({"target_temperature_c": 21.3}, "params.target_temperature_c: Input should be a multiple of 0.5"),
        ({"target_temperature_c": 21.25}, "params.target_temperature_c: Input should be a multiple of 0.5"),
        ({"target_temperature_c": "21"}, "params.target_temperature_c: Input should be a valid number"),
        ({"fan": "high"}, "params.fan: Extra inputs are not permitted"),
    ],
)
def test_aux_heating_params(params: dict[str, Any], expected: str | None) -> None:
    if expected is None:
        parsed = command_params(CommandOp.AUX_HEATING_START, params)
        assert isinstance(parsed, AuxHeatingParams)
        assert 10 <= parsed.duration_min <= 60
        assert (parsed.target_temperature_c * 2).is_integer()
    else:
        with pytest.raises(ProtocolError) as info:
            command_params(CommandOp.AUX_HEATING_START, params)
        assert info.value.reason is RefusalReason.MALFORMED
        assert expected in info.value.detail


def test_every_half_degree_is_a_valid_temperature() -> None:
    temps = [16 + i / 2 for i in range(28)]
    assert temps[-1] == 29.5
    for temp in temps:
        command_params("aux_heating.start", {"target_temperature_c": temp})


@pytest.mark.parametrize(("minutes", "ok"), [(9, False), (10, True), (60, True), (61, False)])
def test_ventilation_params(minutes: int, ok: bool) -> None:
    if ok:
        assert command_params(CommandOp.VENTILATION_START, {"duration_min": minutes}) == VentilationParams(
            duration_min=minutes
        )
    else:
        with pytest.raises(ProtocolError, match=r"params\.duration_min"):
            command_params(CommandOp.VENTILATION_START, {"duration_min": minutes})


def test_honk_params() -> None:
    assert command_params(CommandOp.HONK_AND_FLASH, {}) == HonkParams(mode=HonkMode.HONK_AND_FLASH, duration_s=10)
    assert command_params(CommandOp.HONK_AND_FLASH, {"mode": "flash", "duration_s": 30}) == HonkParams(
        mode=HonkMode.FLASH, duration_s=30
    )
    for bad in ({"mode": "honk"}, {"duration_s": 0}, {"duration_s": 31}):
        with pytest.raises(ProtocolError):
            command_params(CommandOp.HONK_AND_FLASH, bad)


def test_notify_params() -> None:
    assert command_params(CommandOp.INFOTAINMENT_NOTIFY, {"message": "hi"}) == NotifyParams(message="hi")
    for bad in ({}, {"message": ""}, {"message": "x" * 1001}):
        with pytest.raises(ProtocolError):
            command_params(CommandOp.INFOTAINMENT_NOTIFY, bad)


@pytest.mark.parametrize("op", [op for op, model in COMMAND_PARAMS.items() if model is EmptyParams])
def test_commands_without_params_refuse_any(op: CommandOp) -> None:
    assert command_params(op, {}) == EmptyParams()
    with pytest.raises(ProtocolError, match=r"params\.duration_min: Extra inputs"):
        command_params(op, {"duration_min": 10})


def test_every_op_has_a_params_model() -> None:
    assert set(COMMAND_PARAMS) == set(CommandOp)


def test_unknown_op() -> None:
    with pytest.raises(ProtocolError, match="unknown command op 'fly'"):
        command_params("fly", {})


def test_command_checks_params_against_op() -> None:
    assert Command(command_id="c1", op=CommandOp.LOCK).params == {}
    detail = malformed(Command, {"command_id": "c1", "op": "aux_heating.start", "params": {"duration_min": 5}})
    assert detail == "body.params.duration_min: Input should be greater than or equal to 10"
    detail = malformed(Command, {"command_id": "c1", "op": "open_sesame", "params": {}})
    assert detail.startswith("body.op: Input should be 'lock', 'unlock'")
    assert "body.command_id: String should have at least 1 character" in malformed(
        Command, {"command_id": "", "op": "lock", "params": {}}
    )


# ----------------------------------------------------------------------------------------------------- results


def test_result_reasons_match_states() -> None:
    ok = parse_body(CommandResult, {"command_id": "c", "state": "failed", "reason": "battery_low", "at": 1})
    assert ok.reason == "battery_low"
    rejected = parse_body(CommandResult, {"command_id": "c", "state": "rejected", "reason": "expired", "at": 1})
    assert rejected.reason == "expired"
    cases = [
        ({"state": "failed"}, "a result in state failed needs a reason among: door_open"),
        ({"state": "failed", "reason": "expired"}, "needs a reason among: door_open"),
        ({"state": "rejected", "reason": "door_open"}, "needs a reason among: bad_signature"),
        ({"state": "accepted", "reason": "door_open"}, "a result in state accepted carries no reason"),
        ({"state": "succeeded", "reason": "malformed"}, "carries no reason"),
        ({"state": "failed", "reason": "gremlins"}, "body.reason: unknown result reason 'gremlins'"),
        ({"state": "done"}, "body.state: Input should be 'accepted'"),
    ]
    for fields, expected in cases:
        assert expected in malformed(CommandResult, {"command_id": "c", "at": 1, **fields})


def test_result_leaves_out_unset_fields() -> None:
    accepted = CommandResult(command_id="c", state=ResultState.ACCEPTED, at=1)
    assert accepted.model_dump(mode="json") == {"command_id": "c", "state": "accepted", "at": 1.0}


def test_final_states() -> None:
    assert {s for s in CommandState if s.is_final} == {"succeeded", "failed", "rejected", "timed_out"}
    assert {s for s in ResultState if s.is_final} == {"succeeded", "failed", "rejected"}


# ----------------------------------------------------------------------------------------------------- events


def test_event_password_is_clear_only_in_json() -> None:
    event = Event(type=EventType.INFOTAINMENT_LOGIN, at=1, email="a@example.com", password=SecretStr("hunter2-secret"))
    assert "hunter2" not in repr(event)
    assert "hunter2" not in str(event)
    assert event.model_dump(mode="json")["password"] == "hunter2-secret"
    assert "hunter2-secret" in event.model_dump_json()
    assert "hunter2" not in str(event.model_dump())  # python mode keeps the SecretStr
    parsed = parse_body(Event, event.model_dump(mode="json"))
    assert parsed.password is not None
    assert parsed.password.get_secret_value() == "hunter2-secret"


def test_event_pairing_code_is_not_in_repr() -> None:
    event = Event(type=EventType.PAIRING_CODE_ENTERED, at=1, pairing_code="48213907")
    assert "48213907" not in repr(event)
    assert event.model_dump(mode="json")["pairing_code"] == "48213907"


def test_event_fields_required_by_type() -> None:
    assert "body: a door_opened event needs door" in malformed(Event, {"type": "door_opened", "at": 1})
    assert "needs email, password" in malformed(Event, {"type": "infotainment_login", "at": 1})
    assert "needs privacy_mode" in malformed(Event, {"type": "privacy_changed", "at": 1})
    assert "body.door: Input should be" in malformed(Event, {"type": "door_opened", "at": 1, "door": "sunroof"})
    assert "body.type: Input should be" in malformed(Event, {"type": "exploded", "at": 1})


def test_event_leaves_out_unset_fields() -> None:
    assert Event(type=EventType.LOCKED, at=5).model_dump(mode="json") == {"type": "locked", "at": 5.0}


def test_every_event_type_has_an_example() -> None:
    assert [e.type for e in events()] == list(EventType)


# ----------------------------------------------------------------------------------------------------- app API


def test_app_request_repr_hides_token_and_params() -> None:
    request = AppRequest(id="r1", op="login", token="sess-secret", params={"password": "pw-secret"})
    assert "secret" not in repr(request)
    assert request.model_dump(mode="json") == {
        "id": "r1",
        "op": "login",
        "token": "sess-secret",
        "params": {"password": "pw-secret"},
    }
    assert AppRequest(id="r2", op="logout").model_dump(mode="json") == {"id": "r2", "op": "logout", "params": {}}


def test_app_response_shapes() -> None:
    assert AppResponse.success("r1", {"token": "t"}).model_dump(mode="json") == {
        "id": "r1",
        "ok": True,
        "result": {"token": "t"},
    }
    assert "'t'" not in repr(AppResponse.success("r1", {"token": "t"}))
    error = AppError(code=ErrorCode.SPIN_INCORRECT, message="wrong S-PIN", remaining_tries=1)
    assert AppResponse.failure("r2", error).model_dump(mode="json") == {
        "id": "r2",
        "ok": False,
        "error": {"code": "SPIN_INCORRECT", "message": "wrong S-PIN", "remaining_tries": 1},
    }
    assert "a successful response carries no error" in malformed(
        AppResponse, {"id": "r", "ok": True, "error": {"code": "GARAGE_FULL", "message": "m"}}
    )
    assert "a failed response needs an error" in malformed(AppResponse, {"id": "r", "ok": False})
    assert "body.error.code: Input should be" in malformed(
        AppResponse, {"id": "r", "ok": False, "error": {"code": "OOPS", "message": "m"}}
    )


def test_error_codes_are_those_of_the_spec() -> None:
    if not SPEC.exists():
        pytest.skip("SPEC.md is not beside the repository")
    section = SPEC.read_text().split("Error codes", 1)[1].split("\n\n", 1)[0]
    assert {c.value for c in ErrorCode} == set(re.findall(r"`([A-Z_]+)", section))


def test_push_event_and_control_refuse_unknown_kinds() -> None:
    assert "body.type: Input should be" in malformed(PushEvent, {"type": "spam", "at": 1, "data": {}})
    assert "body.action: Input should be" in malformed(ControlMessage, {"action": "teleport", "params": {}})
    control = ControlMessage(
        action=ControlAction.INFOTAINMENT_LOGIN, params={"email": "a@b.c", "password": "pw-secret"}
    )
    assert "pw-secret" not in repr(control)
