"""App → cloud → car → cloud → app over the real Mosquitto, with the real TCU (`TcuSession`) as the car and an
operator acting in the car through `sim/{vin}/control`."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator

import pytest
from handler_kit import BORN, CAR_KEYS, FLEET, LEON, SPIN, WAIT, Stack, cloud_keys, sign_up

from tcu_sim.app import UnsupportedByVehicle
from tcu_sim.protocol import CommandState, ControlMessage, encode_json
from tcu_sim.transport import Backoff, BrokerAddress, LinkPool, SeqStore, TcuConfig, TcuSession
from tcu_sim.vehicle import Vehicle


@contextlib.asynccontextmanager
async def real_car(stack: Stack, vin: str) -> AsyncIterator[TcuSession]:
    """The TCU of one test car, online on the stack's broker, on the stack's virtual clock."""
    record = next(v for v in FLEET if v.vin == vin)
    rng = random.Random(vin)
    vehicle = Vehicle.new(vin, record.model, record.equipment, (41.39, 2.17), rng, stack.clock.now())
    session = TcuSession(
        vehicle,
        signing_key=CAR_KEYS[vin],
        cloud_keys=cloud_keys(),
        clock=stack.clock,
        rng=rng,
        seq_store=SeqStore(None),
        config=TcuConfig(status_interval_s=3600, backoff=Backoff(base_s=0.05, cap_s=0.5), topics=stack.topics),
        tls=stack.broker.ssl_context(vin),
    )
    async with LinkPool() as pool:
        task = asyncio.create_task(
            session.run(pool, BrokerAddress(stack.broker.host, stack.broker.port)), name=f"car[{vin}]"
        )
        try:
            await session.wait_online(WAIT)
            yield session
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def control(stack: Stack, vin: str, action: str, **params: object) -> None:
    """What a person does in or at the car, sent as the operator."""
    message = ControlMessage.model_validate({"action": action, "params": params})
    async with stack.broker.client("operator", identifier=f"operator-{action}") as operator:
        await operator.publish(stack.topics.control(vin), encode_json(message.model_dump(mode="json")), qos=1)


@pytest.mark.slow
async def test_enrol_in_the_car_then_lock_and_fail_with_a_door_open(stack: Stack) -> None:
    async with stack.app() as app, real_car(stack, LEON) as car:
        await sign_up(app, "driver@example.com")
        await app.add_vehicle(LEON)
        before = stack.stats.applied["events"]
        await control(stack, LEON, "tkov")  # both keys in the car (R5)
        await stack.wait(lambda s: s.applied["events"] > before and s.commands_sent >= 1)
        assert [v["state"] for v in await app.list_vehicles()] == ["active"]

        command_id = await app.lock(LEON, SPIN)
        assert await app.wait_command(command_id, timeout=WAIT) is CommandState.SUCCEEDED
        seen = stack.stats.applied["status"]
        command_id = await app.refresh_status(LEON)  # the car sends a fresh status
        assert await app.wait_command(command_id, timeout=WAIT) is CommandState.SUCCEEDED
        await stack.wait(lambda s: s.applied["status"] > seen)
        status = await app.vehicle_status(LEON)
        assert status["online"] is True
        assert status["status"]["locked"] is True

        command_id = await app.unlock(LEON, SPIN)
        assert await app.wait_command(command_id, timeout=WAIT) is CommandState.SUCCEEDED
        await control(stack, LEON, "open_door", door="front_left")
        door = await app.next_event(timeout=WAIT)  # pushed to the owner's app: a vehicle change
        while door.data.get("event") != "door_opened":
            door = await app.next_event(timeout=WAIT)
        assert door.data == {"vin": LEON, "event": "door_opened", "at": door.data["at"], "door": "front_left"}
        command_id = await app.lock(LEON, SPIN)
        assert await app.wait_command(command_id, timeout=WAIT) is CommandState.FAILED
        info = await app.command_status(command_id)
        assert info.reason == "door_open"
        assert car.stats.commands_rejected == 0


@pytest.mark.slow
async def test_a_car_without_the_function_is_refused_by_the_cloud(stack: Stack) -> None:
    async with stack.app() as app, real_car(stack, BORN):
        await sign_up(app, "ev@example.com")
        await app.add_vehicle(BORN)
        before = stack.stats.applied["events"]
        await control(stack, BORN, "tkov")
        await stack.wait(lambda s: s.applied["events"] > before)
        with pytest.raises(UnsupportedByVehicle):
            await app.heater_start(BORN, SPIN)
        command_id = await app.ventilation_start(BORN, SPIN, duration_min=15)
        assert await app.wait_command(command_id, timeout=WAIT) is CommandState.SUCCEEDED
