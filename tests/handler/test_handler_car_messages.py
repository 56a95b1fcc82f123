"""Car messages are applied only after signature, issuer, audience, time and seq checks (R18); anything refused is
counted by reason and changes nothing; a duplicate is never applied twice."""

from __future__ import annotations

import structlog
from handler_kit import ATECA_RADIO, BORN, CAR_KEYS, LEON, FakeCar, Stack, status

from broker.handler import seq_stream
from tcu_sim.protocol import MessageType, ResultState, SigningKey, TopicKind


async def _state_unchanged(stack: Stack, vin: str) -> None:
    state = await stack.services.registry.get_vehicle_state(vin)
    assert state is None or state.status is None


async def test_a_signed_status_is_applied(stack: Stack) -> None:
    async with stack.car(LEON) as car:
        await car.send_status(status(at=stack.clock.now(), locked=False))
        await stack.wait(lambda s: s.applied["status"] == 1)
    state = await stack.services.registry.get_vehicle_state(LEON)
    assert state is not None
    assert state.status is not None
    assert state.status["locked"] is False


async def test_forged_signature_is_refused_and_changes_nothing(stack: Stack) -> None:
    # Signed by another key that claims the car's kid: the pinned key does not verify it.
    forger = FakeCar(stack, LEON, key=SigningKey.generate(LEON))
    async with forger:
        await forger.send_status()
        await stack.wait(lambda s: s.refused["bad_signature"] == 1)
    assert stack.stats.applied["status"] == 0
    await _state_unchanged(stack, LEON)


async def test_a_token_with_a_flipped_byte_is_refused(stack: Stack) -> None:
    async with stack.car(LEON) as car:
        token = bytearray(car.sign(MessageType.STATUS, status()).encode())
        token[-5] = ord("A") if token[-5] != ord("A") else ord("B")
        await car.publish("status", bytes(token))
        await stack.wait(lambda s: s.refused["bad_signature"] == 1)
    await _state_unchanged(stack, LEON)


async def test_wrong_issuer_is_refused(stack: Stack) -> None:
    # The car's own key, but claiming to be another car in `iss`.
    async with FakeCar(stack, LEON, issuer=BORN) as car:
        await car.send_status()
        await stack.wait(lambda s: s.refused["wrong_issuer"] == 1)
    await _state_unchanged(stack, LEON)
    await _state_unchanged(stack, BORN)


async def test_another_cars_key_cannot_speak_for_a_car(stack: Stack) -> None:
    # ATECA's key signing a status published on LEON's topic (as if LEON's certificate were stolen).
    async with FakeCar(stack, LEON, key=CAR_KEYS[ATECA_RADIO], issuer=LEON) as car:
        await car.send_status()
        await stack.wait(lambda s: s.refused["unknown_key"] == 1)
    await _state_unchanged(stack, LEON)


async def test_wrong_audience_and_expired_are_refused(stack: Stack) -> None:
    async with stack.car(LEON) as car:
        await car.publish("status", car.sign(MessageType.STATUS, status(), aud=BORN))
        await stack.wait(lambda s: s.refused["wrong_audience"] == 1)
        await car.publish("status", car.sign(MessageType.STATUS, status(), exp=stack.clock.now() - 3600))
        await stack.wait(lambda s: s.refused["expired"] == 1)
        await car.publish("status", car.sign(MessageType.EVENT, status()))  # a status signed as an event
        await stack.wait(lambda s: s.refused["wrong_type"] == 1)
    await _state_unchanged(stack, LEON)


async def test_garbage_is_refused_as_malformed(stack: Stack) -> None:
    async with stack.car(LEON) as car:
        await car.publish("status", b"\xff\xfe not a token")
        await car.publish("connection", b"maybe")
        await stack.wait(lambda s: s.refused["malformed"] == 2)
    assert stack.stats.applied["status"] == 0


async def test_duplicate_status_is_dropped_not_applied_twice(stack: Stack) -> None:
    async with stack.car(LEON) as car:
        token = await car.send_status(status(at=stack.clock.now()))
        await stack.wait(lambda s: s.applied["status"] == 1)
        await car.publish("status", token)  # the same message again (e.g. redelivered)
        await stack.wait(lambda s: s.refused["duplicate"] == 1)
        # An older seq, freshly signed, is a duplicate too: seq only grows.
        await car.send_status(status(at=stack.clock.now() + 5), seq=1)
        await stack.wait(lambda s: s.refused["duplicate"] == 2)
    assert stack.stats.applied["status"] == 1
    assert not await stack.services.registry.claim_seq(seq_stream(LEON, TopicKind.STATUS), 1)


async def test_replayed_result_is_refused(stack: Stack) -> None:
    async with stack.car(LEON) as car:
        token = await car.send_result("cmd-unknown", ResultState.ACCEPTED)
        await stack.wait(lambda s: s.applied["results"] == 1)
        await car.publish("results", token)
        await stack.wait(lambda s: s.refused["replayed"] == 1)
    assert stack.stats.applied["results"] == 1


async def test_connection_state_is_kept(stack: Stack) -> None:
    async with stack.car(LEON) as car:
        await car.publish("connection", b"online", retain=True)
        await stack.wait(lambda s: s.applied["connection"] == 1)
        state = await stack.services.registry.get_vehicle_state(LEON)
        assert state is not None
        assert state.online is True
        await car.publish("connection", b"offline", retain=True)
        await stack.wait(lambda s: s.applied["connection"] == 2)
    state = await stack.services.registry.get_vehicle_state(LEON)
    assert state is not None
    assert state.online is False


async def test_results_of_the_clouds_own_notices_are_not_applied_but_a_rejection_is_reported(stack: Stack) -> None:
    with structlog.testing.capture_logs() as events:
        async with stack.car(LEON) as car:
            await car.send_result("sys-0123456789abcdef", ResultState.ACCEPTED)
            await car.send_result("sys-0123456789abcdef", ResultState.REJECTED, reason="expired")
            await stack.wait(lambda s: s.applied["results"] == 2)
    names = [e["event"] for e in events]
    assert names.count("car.rejected_system_command") == 1
    assert "command.transition_ignored" not in names
