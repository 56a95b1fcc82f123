"""Commands: signed by the cloud for one car, never retained, numbered per car; their lifecycle as the app sees
it; `timed_out` on the virtual clock; one command per request id."""

from __future__ import annotations

import pytest
from handler_kit import LEON, SPIN, FakeCar, Stack, cloud_keys, enrol_tkov, sign_up

from broker.handler import COMMAND_SEQ_COUNTER
from tcu_sim.app import AppClient, AppTimeout
from tcu_sim.protocol import CLOUD, CommandState, KeySet, MessageType, ResultState, Verifier


async def _owner(stack: Stack, app: AppClient, car: FakeCar, email: str = "owner@example.com") -> None:
    await sign_up(app, email)
    await enrol_tkov(stack, app, car, email)
    await car.next_command(0)  # the primary-user confirmation (infotainment.notify)


async def test_command_reaches_the_car_signed_and_verifiable_with_the_cloud_jwks(stack: Stack) -> None:
    async with stack.app() as app, stack.car(LEON) as car:
        await _owner(stack, app, car)
        command_id = await app.lock(LEON, SPIN)
        message, verified = await car.next_command(1)
    assert message.retain is False
    assert message.qos == 1
    assert verified.typ is MessageType.COMMAND
    assert verified.iss == CLOUD
    assert verified.aud == LEON
    assert verified.kid == "cloud-1"
    assert verified.body == {"command_id": command_id, "op": "lock", "params": {}}
    record = await stack.services.registry.get_command(command_id)
    assert record is not None
    assert verified.exp == record.expires_at  # exp is the command's TTL
    # The seq comes from the registry's per-car counter (the confirmation was 1).
    assert verified.seq == 2
    assert await stack.services.registry.next_counter(COMMAND_SEQ_COUNTER.format(vin=LEON)) == 3
    # Verifiable by anyone holding only the published cloud JWKS.
    published = KeySet.from_jwks(cloud_keys().to_jwks())
    token = message.payload if isinstance(message.payload, bytes) else b""
    assert Verifier(published, audience=LEON, clock=stack.clock).verify(token, typ=MessageType.COMMAND).jti


async def test_lifecycle_as_the_app_sees_it(stack: Stack) -> None:
    async with stack.app() as app, stack.car(LEON) as car:
        await _owner(stack, app, car)
        command_id = await app.unlock(LEON, SPIN)
        await car.next_command(1)
        await stack.wait(lambda s: s.commands_sent == 2)
        await car.send_result(command_id, ResultState.ACCEPTED)
        await car.send_result(command_id, ResultState.SUCCEEDED)
        assert await app.wait_command(command_id, timeout=10) is CommandState.SUCCEEDED
        pushed = [e.data["state"] for e in app.pending_events() if e.type == "command_progress"]
        assert pushed == ["delivered", "in_progress", "succeeded"]
        info = await app.command_status(command_id)
    assert info.state is CommandState.SUCCEEDED


async def test_failed_result_carries_its_reason_and_final_states_never_change(stack: Stack) -> None:
    async with stack.app() as app, stack.car(LEON) as car:
        await _owner(stack, app, car)
        command_id = await app.lock(LEON, SPIN)
        await car.next_command(1)
        await car.send_result(command_id, ResultState.ACCEPTED)
        await car.send_result(command_id, ResultState.FAILED, reason="door_open")
        assert await app.wait_command(command_id, timeout=10) is CommandState.FAILED
        await car.send_result(command_id, ResultState.SUCCEEDED)  # too late: final states never change
        await stack.wait(lambda s: s.applied["results"] == 3)
        info = await app.command_status(command_id)
    assert info.state is CommandState.FAILED
    assert info.reason == "door_open"


async def test_timed_out_on_the_virtual_clock_when_no_car_answers(stack: Stack) -> None:
    async with stack.app() as app, stack.car(LEON) as car:
        await _owner(stack, app, car)
        command_id = await app.heater_start(LEON, SPIN, duration_min=20)
        await car.next_command(1)
        await stack.wait(lambda s: s.pushes >= 1)
        with pytest.raises(AppTimeout):
            await app.wait_command(command_id, timeout=0.2)  # nothing happens while the clock stands still
        # TTL 60 s + the car's 30 s skew allowance, then the expiry task reports it.
        await stack.advance_until(
            lambda: getattr(app.known_state(command_id), "state", None) is CommandState.TIMED_OUT,
            step=5,
            limit=120,
        )
        assert await app.wait_command(command_id, timeout=5) is CommandState.TIMED_OUT
        created_at = (await app.command_status(command_id)).created_at
        assert created_at is not None
        assert stack.clock.now() - created_at >= 90
        # A late answer from the car changes nothing.
        await car.send_result(command_id, ResultState.SUCCEEDED)
        await stack.wait(lambda s: s.applied["results"] == 1)
        assert (await app.command_status(command_id)).state is CommandState.TIMED_OUT


async def test_same_request_id_creates_one_command(stack: Stack) -> None:
    async with stack.app() as app, stack.car(LEON) as car:
        await _owner(stack, app, car)
        first = await app.command(LEON, "lock", spin=SPIN, request_id="r-same-request")
        again = await app.command(LEON, "lock", spin=SPIN, request_id="r-same-request")
        assert again == first
        # A different request afterwards is the marker: once it arrived, a second "lock" would have too.
        other = await app.command(LEON, "honk_and_flash", {"mode": "flash", "duration_s": 5})
        await car.next_command(2)
        ops = [(v.body["command_id"], v.body["op"]) for v in [(await car.next_command(i))[1] for i in (1, 2)]]
    assert ops == [(first, "lock"), (other, "honk_and_flash")]
    assert len(car.commands()) == 3
