"""Every attack is refused with its own reason and changes no state: commands injected at a car (as only the
cloud identity can), and the cloud-side twins — status a cloned car sends with the car's certificate."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from faults_kit import WAIT, CloudWorld, cloud_world, fleet

from tcu_sim.faults import Attacker, AttackKind, CommandForge, StatusForge, attack_grants, flip_signature
from tcu_sim.protocol import CommandState, RefusalReason, RejectReason, Topics
from tcu_sim.testing import MosquittoBroker
from tcu_sim.transport import TcuSession

CONFIG = """
name: attacks
seed: 66
defaults:
  status_interval_s: 1h
  home_area: {center: {lat: 41.39, lon: 2.17}, radius_km: 1}
groups:
  - {name: leon, count: 2, model: leon, equipment: media_system}
users:
  - {email: owner@tcu-sim.test, password: owner-pass-1, spin: "2580", vehicles: [leon]}
"""

CAR_ATTACKS = [k for k in AttackKind if k.on_car]
CLOUD_ATTACKS = [k for k in AttackKind if not k.on_car]


@pytest.fixture
async def world(mosquitto: MosquittoBroker, tmp_path: Path) -> AsyncIterator[CloudWorld]:
    async with cloud_world(mosquitto, fleet(CONFIG), tmp_path) as world:
        yield world


def _car_state(session: TcuSession) -> tuple[Any, ...]:
    v = session.vehicle
    return (v.revision, v.locked, v.open_doors, session.seq.last_command_seq, session.stats.commands_accepted)


async def _cloud_state(world: CloudWorld, vin: str, command_ids: list[str]) -> tuple[Any, ...]:
    state = await world.registry.get_vehicle_state(vin)
    commands = [await world.registry.get_command(c) for c in command_ids]
    applied = sum(1 for h in world.handled if h.vin == vin and h.applied)
    return (state, [(c.state, c.updated_at) for c in commands if c is not None], applied)


async def _settled(world: CloudWorld, session: TcuSession) -> None:
    """Wait until the cloud has handled everything the car signed so far (so that what follows is the attack's)."""
    def caught_up(_: Any) -> bool:
        seqs = [h.seq or 0 for h in world.handled if h.vin == session.vin]
        return max(seqs, default=0) >= session.seq.last_issued

    await world.handler.wait_for(caught_up, WAIT)
    await world.handler.drain(WAIT)


async def test_every_attack_on_a_car_is_rejected_with_its_reason_and_changes_nothing(world: CloudWorld) -> None:
    rig = world.rig
    target, other = rig.cars[0].vin, rig.cars[1].vin
    session = rig.runner.sessions[target]
    await rig.broker.grant(attack_grants(Topics(), [car.vin for car in rig.cars]))
    attacker = Attacker(rig.broker.client)
    forge = CommandForge(rig.state.load_cloud_signing_key(), rig.clock)
    async with world.app() as app, attacker.wiretap(target) as captured:
        await app.login("owner@tcu-sim.test", "owner-pass-1")
        unlock = await app.unlock(target, "2580")
        assert await app.wait_command(unlock, timeout=WAIT) is CommandState.SUCCEEDED
        lock = await app.lock(target, "2580")
        assert await app.wait_command(lock, timeout=WAIT) is CommandState.SUCCEEDED
        assert session.vehicle.locked
        recorded_unlock = captured[0]  # what went over the wire to the car, recorded with its certificate

        for kind in CAR_ATTACKS:
            expected = kind.expected
            assert isinstance(expected, RejectReason)
            if kind is AttackKind.REPLAY:
                token = recorded_unlock
            else:
                token = forge.forge(kind, target, session.seq.last_command_seq + 1, other_vin=other).encode()
            await _settled(world, session)
            car_before = _car_state(session)
            cloud_before = await _cloud_state(world, target, [unlock, lock])
            await attacker.inject_command(target, token)
            async with asyncio.timeout(WAIT):
                rejection = await world.rejections.get()
            assert rejection["reason"] == expected.value, kind
            assert _car_state(session) == car_before, f"{kind} changed the car"
            # The car's `rejected` result reaches the cloud; it changes no command and no vehicle state there.
            await _settled(world, session)
            state, commands, _ = await _cloud_state(world, target, [unlock, lock])
            assert (state, commands) == cloud_before[:2], f"{kind} changed the cloud"
        assert session.stats.rejected_by_reason == {
            "replayed": 1, "bad_signature": 2, "unknown_key": 1, "expired": 1, "wrong_audience": 1
        }
        assert session.stats.commands_accepted == 2  # the owner's two, nothing else
        assert session.vehicle.locked


async def test_every_attack_on_the_cloud_is_refused_with_its_reason_and_changes_nothing(world: CloudWorld) -> None:
    rig = world.rig
    target, other = rig.cars[0].vin, rig.cars[1].vin
    await rig.broker.grant(attack_grants(Topics(), [car.vin for car in rig.cars]))
    attacker = Attacker(rig.broker.client)
    forge = StatusForge(rig.clock)
    captured = await attacker.latest_status(target)  # the car's retained status, as the cloud identity reads it
    from faults_kit import claims

    body, seq = claims(captured)["body"], claims(captured)["seq"]
    tokens = {
        AttackKind.REPLAYED_STATUS: captured,
        AttackKind.FORGED_STATUS: forge.forged(captured).encode(),
        AttackKind.STATUS_WRONG_KEY: forge.wrong_key(target, body, seq + 1).encode(),
        AttackKind.STATUS_OTHER_CAR_KEY: forge.other_car_key(target, rig.state.load_car_key(other), body, seq + 1)
        .encode(),
    }
    assert set(tokens) == set(CLOUD_ATTACKS)
    for kind, token in tokens.items():
        await _settled(world, rig.runner.sessions[target])
        expected = kind.expected
        assert isinstance(expected, RefusalReason)
        before = await _cloud_state(world, target, [])
        refused_before = world.handler.stats.refused[expected.value]
        await attacker.inject_status(target, token)
        await world.handler.wait_for(lambda s, e=expected, n=refused_before: s.refused[e.value] > n, WAIT)
        await world.handler.drain(WAIT)
        handled = next(h for h in reversed(world.handled) if h.payload == token)
        assert (handled.applied, handled.reason) == (False, expected.value), kind
        assert await _cloud_state(world, target, []) == before, f"{kind} changed the cloud"
    refused = {h.reason for h in world.handled if not h.applied and h.kind == "status"}
    assert refused == {"duplicate", "bad_signature", "unknown_key"}


def test_a_flipped_signature_stays_canonical_base64url() -> None:
    token = "aGVhZA.cGF5bG9hZA." + "A" * 85 + "w"
    flipped = flip_signature(token)
    assert flipped != token
    assert flipped.split(".")[2][1:] == token.split(".")[2][1:]
