"""Statuses verified in worker processes (`HandlerConfig.verify_processes`) are judged exactly as on the event
loop — signature with the pinned key, claims on the handler's (virtual) clock, body, seq — and when a worker
dies the handler carries on verifying on the loop."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator

import pytest
from handler_kit import BORN, LEON, FakeCar, Stack, cloud_stack, status

from broker.handler import HandlerConfig
from tcu_sim.protocol import MessageType, SigningKey
from tcu_sim.testing import MosquittoBroker


@pytest.fixture
async def pooled(mosquitto: MosquittoBroker, registry_url: str) -> AsyncIterator[Stack]:
    """The cloud with one verification worker."""
    config = HandlerConfig(session_expiry_s=0, car_workers=1, app_workers=1, verify_processes=1)
    async with cloud_stack(mosquitto, registry_url, config=config) as stack:
        assert stack.handler.cars.pool is not None
        assert stack.handler.cars.pool.running
        yield stack


async def test_workers_apply_good_statuses_and_refuse_what_the_loop_would(pooled: Stack) -> None:
    stack = pooled
    async with stack.car(LEON) as car, FakeCar(stack, BORN, key=SigningKey.generate(BORN)) as forger:
        token = await car.send_status(status(at=stack.clock.now(), locked=False))
        await car.publish("status", token)  # a duplicate
        await car.publish("status", car.sign(MessageType.STATUS, status(), exp=stack.clock.now() - 3600))
        await car.publish("status", car.sign(MessageType.STATUS, {"locked": "maybe"}))
        await forger.send_status()
        await stack.wait(lambda s: s.applied["status"] + sum(s.refused.values()) == 5)
    assert stack.stats.applied["status"] == 1
    assert dict(stack.stats.refused) == {"duplicate": 1, "expired": 1, "malformed": 1, "bad_signature": 1}
    state = await stack.services.registry.get_vehicle_state(LEON)
    assert state is not None
    assert state.status is not None
    assert state.status["locked"] is False
    assert await stack.services.registry.get_vehicle_state(BORN) is None


async def test_when_a_worker_dies_statuses_are_verified_on_the_loop(pooled: Stack) -> None:
    stack = pooled
    pool = stack.handler.cars.pool
    assert pool is not None
    for pid in pool.worker_pids():
        os.kill(pid, signal.SIGKILL)
    async with stack.car(LEON) as car:
        await car.send_status(status(at=stack.clock.now()))
        await stack.wait(lambda s: s.applied["status"] == 1)
        assert not pool.running
        await car.send_status(status(at=stack.clock.now() + 1))
        await stack.wait(lambda s: s.applied["status"] == 2)
    assert stack.stats.refused == {}
