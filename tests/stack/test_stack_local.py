"""`LocalStack` with the demo fleet over the real Mosquitto: every car online, the demo user's cars enrolled the
way a person enrols them, an app locking and unlocking a car, and the state kept for the next run."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from stack_kit import WAIT, demo, demo_user, local_stack

from tcu_sim.fleet import UserRole, expand_fleet, select_cars
from tcu_sim.onboard import set_up_users
from tcu_sim.protocol import CommandState
from tcu_sim.stack import BrokerKind, EnrolmentOutcome, StackConfig, StackError
from tcu_sim.testing.plugin import require_mosquitto


@pytest.fixture(autouse=True)
def _mosquitto() -> None:
    require_mosquitto()


async def test_the_demo_comes_up_and_the_demo_user_locks_a_car(tmp_path: Path) -> None:
    fleet = demo()
    email, password, spin = demo_user(fleet)
    cars = expand_fleet(fleet)
    theirs = [c.vin for c in select_cars(cars, next(u for u in fleet.users if u.email == email).vehicles)]

    async with local_stack(tmp_path / "state", fleet, broker="mosquitto") as stack:
        assert stack.broker.kind is BrokerKind.MOSQUITTO
        assert stack.fleet.online_count == len(cars) == 20
        assert stack.timings.all_online_s is not None
        assert stack.cloud.link.connected
        primary = {(c.vin, c.outcome) for c in stack.users if c.email == email}
        assert primary == {(vin, EnrolmentOutcome.ENROLLED) for vin in theirs}
        secondary = [c for c in stack.users if c.role is UserRole.SECONDARY]
        assert {c.outcome for c in secondary} == {EnrolmentOutcome.INVITED}
        assert {c.detail for c in stack.users if c.email == email} == {"tkov", "pairing_code"}

        async with stack.app_client(timeout=WAIT) as app:
            await app.login(email, password)
            garage = {v["vin"]: v for v in await app.list_vehicles()}
            assert set(garage) == set(theirs)
            assert {(v["role"], v["state"]) for v in garage.values()} == {("primary", "active")}

            vin = theirs[0]
            car = stack.fleet.sessions[vin].vehicle
            command_id = await app.unlock(vin, spin)
            assert await app.wait_command(command_id, timeout=WAIT) is CommandState.SUCCEEDED
            assert car.locked is False
            command_id = await app.lock(vin, spin)
            assert await app.wait_command(command_id, timeout=WAIT) is CommandState.SUCCEEDED
            assert car.locked is True

        trace = await stack.commands.wait_final(command_id, WAIT)
        assert (trace.vin, trace.op, trace.user, trace.state) == (vin, "lock", email, CommandState.SUCCEEDED)
        assert [s.state for s in trace.steps] == [
            CommandState.DELIVERED, CommandState.IN_PROGRESS, CommandState.SUCCEEDED,
        ]
        assert trace.line().startswith(f"lock {vin} by {email}: app → cloud → car (delivered ")

        row = next(r for r in stack.snapshot().cars if r.vin == vin)
        assert (row.online, row.locked, row.last_command) == (True, True, "lock succeeded")
        assert "demo (P)" in row.users

        session = json.loads(stack.app_session_path.read_text())
        terminal = stack.broker.app("demo-app")
        assert terminal is not None
        assert session["broker"] == f"mqtts://127.0.0.1:{terminal.port}"
        assert session["username"] == "demo-app"
        assert stat.S_IMODE(stack.app_session_path.stat().st_mode) == 0o600
    assert not stack.cloud.link.connected


@pytest.mark.slow
async def test_a_second_run_keeps_keys_users_and_cars(tmp_path: Path) -> None:
    state = tmp_path / "state"
    fleet = demo()
    email, password, spin = demo_user(fleet)
    async with local_stack(state, fleet) as first:
        vins = sorted(c.vin for c in first.users if c.email == email)
        key = first.state.car_key_path(vins[0]).read_bytes()

    async with local_stack(state, fleet) as second:
        assert {c.outcome for c in second.users} == {EnrolmentOutcome.ALREADY}
        assert sorted(c.vin for c in second.users if c.email == email) == vins
        assert second.state.car_key_path(vins[0]).read_bytes() == key
        assert second.fleet.online_count == 20
        async with second.app_client(timeout=WAIT) as app:
            await app.login(email, password)
            # The car kept its command seq on disk and the cloud its counter: a new command is not a replay.
            command_id = await app.unlock(vins[0], spin)
            assert await app.wait_command(command_id, timeout=WAIT) is CommandState.SUCCEEDED
        assert second.fleet.sessions[vins[0]].stats.commands_rejected == 0


async def test_a_car_the_cloud_does_not_enrol_is_reported_and_the_rest_go_on(tmp_path: Path) -> None:
    fleet = demo()
    email, _, _ = demo_user(fleet)
    async with local_stack(tmp_path / "state", fleet, enrol_users=False) as stack:
        assert stack.users == []
        leon = select_cars(stack.cars, ["leon[3]"])[0].vin  # the demo user's, without a secondary user
        # In maximum privacy the car's online services are off: the two-key verification is refused in the car.
        stack.fleet.sessions[leon].handle_control(b'{"action": "set_privacy", "params": {"mode": "max"}}')
        cars = await set_up_users(
            fleet, stack.cars, stack.fleet.sessions, lambda: stack.app_client("tcu-sim-up", timeout=WAIT), timeout=2
        )
    outcome = {c.vin: (c.outcome, c.detail) for c in cars if c.email == email}
    assert outcome.pop(leon) == (
        EnrolmentOutcome.SKIPPED, "the cloud did not confirm the in-car step within 2 s"
    )
    assert {o for o, _ in outcome.values()} == {EnrolmentOutcome.ENROLLED}


async def test_an_unreachable_external_broker_fails_the_start_cleanly(tmp_path: Path) -> None:
    stack = local_stack(tmp_path / "state", broker="external", broker_url="mqtt://127.0.0.1:1", online_timeout_s=1)
    with pytest.raises(StackError, match="not online"):
        async with stack:
            pass
    assert "stopped" in repr(stack)


def test_the_config_wants_a_url_exactly_for_an_external_broker(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="broker_url"):
        StackConfig(state_dir=tmp_path, broker_url="mqtt://localhost:1883")
    with pytest.raises(ValueError, match="broker_url"):
        StackConfig.model_validate({"state_dir": tmp_path, "broker": "external"})
