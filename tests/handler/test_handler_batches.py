"""Car messages in batches (SPEC §2.2, §7, P3): a batch's statuses go into the registry in one transaction, each
seq once — duplicates dropped within and across batches, late messages within the anti-replay window accepted,
replays refused — and a message is acknowledged (PUBACK) only once it was applied or refused. A store failure
leaves nothing half-applied and nothing acknowledged; what was not applied is applied once the store is back."""

from __future__ import annotations

from typing import Any, cast

import aiomqtt
from handler_kit import BORN, LEON, WAIT, FakeCar, Stack, StoreFault, cloud_stack, status

from broker.handler import AckLedger, CarMessage, HandlerConfig, HandlerStats, seq_stream
from broker.registry import SEQ_WINDOW
from tcu_sim.protocol import MessageType, ResultState, TopicKind
from tcu_sim.testing import MosquittoBroker


class _Paho:
    """Records the PUBACKs an `AckLedger` sends."""

    def __init__(self) -> None:
        self.acked: list[int] = []

    def ack(self, mid: int, qos: int) -> int:
        self.acked.append(mid)
        return 0


def _messages(stack: Stack, car: FakeCar, seqs: list[int], ledger: AckLedger) -> list[CarMessage]:
    topic = stack.topics.parse(stack.topics.status(car.vin))
    out = []
    for n, seq in enumerate(seqs):
        token = car.sign(MessageType.STATUS, status(at=stack.clock.now() + seq), seq=seq).encode()
        mqtt = aiomqtt.Message(stack.topics.status(car.vin), token, qos=1, retain=False, mid=100 + n, properties=None)
        out.append(CarMessage(topic, token, ledger.track(mqtt)))
    return out


async def _updated_at(stack: Stack, vin: str) -> float | None:
    state = await stack.services.registry.get_vehicle_state(vin)
    return None if state is None else state.updated_at


async def test_one_batch_drops_duplicates_takes_late_seqs_and_keeps_the_newest_then_acks_in_order(
    stack: Stack,
) -> None:
    paho = _Paho()
    ledger = AckLedger(cast(Any, paho), HandlerStats())
    car = stack.car(LEON)
    batch = _messages(stack, car, [1, 2, 2, 4, 3, 1], ledger)
    await stack.handler.cars.handle_batch(batch)
    stats = stack.stats
    assert stats.applied["status"] == 4  # 1, 2, 4 and the late 3
    assert stats.refused["duplicate"] == 2
    assert stats.status_batches == 1  # one registry transaction for the whole batch
    assert await _updated_at(stack, LEON) == stack.clock.now() + 4
    assert paho.acked == [100, 101, 102, 103, 104, 105]  # every message settled, acknowledged in order
    # The next batch: what was seen is refused again, the new seq is taken.
    await stack.handler.cars.handle_batch(_messages(stack, car, [3, 5, 4], ledger))
    assert stats.applied["status"] == 5
    assert stats.refused["duplicate"] == 4
    assert await _updated_at(stack, LEON) == stack.clock.now() + 5
    assert ledger.unacknowledged == 0


async def test_a_settled_message_waits_for_the_ones_before_it() -> None:
    paho = _Paho()
    ledger = AckLedger(cast(Any, paho), HandlerStats())
    first, second, third = (
        ledger.track(aiomqtt.Message("t", b"", qos=1, retain=False, mid=mid, properties=None)) for mid in (1, 2, 3)
    )
    third.settle()
    second.settle()
    assert paho.acked == []  # MQTT: PUBACKs in the order the messages came
    first.settle()
    assert paho.acked == [1, 2, 3]
    assert ledger.unacknowledged == 0
    qos0 = ledger.track(aiomqtt.Message("t", b"", qos=0, retain=False, mid=0, properties=None))
    assert qos0.settled  # nothing to acknowledge
    ledger.close()
    gone = ledger.track(aiomqtt.Message("t", b"", qos=1, retain=False, mid=4, properties=None))
    gone.settle()
    assert paho.acked == [1, 2, 3]  # the connection is gone: the broker sends it again instead


async def test_events_and_results_that_arrive_late_are_applied_replays_are_not(stack: Stack) -> None:
    async with stack.car(LEON) as car:
        door = {"type": "door_opened", "at": stack.clock.now(), "door": "front_left"}
        for seq in (5, 3, 3, 5):  # 3 overtaken by 5 (e.g. two cloud processes): still applied, once
            await car.send_event(door, seq=seq)
        await stack.wait(lambda s: s.applied["events"] + s.refused["duplicate"] == 4)
        assert stack.stats.applied["events"] == 2
        await car.send_event(door, seq=5 + SEQ_WINDOW)
        await car.send_event(door, seq=4)  # now older than the window: cannot be told from a replay
        await stack.wait(lambda s: s.refused["duplicate"] == 3)
        token = await car.send_result("cmd-unknown", ResultState.ACCEPTED, seq=2)
        await car.send_result("cmd-unknown", ResultState.ACCEPTED, seq=1)
        await car.publish("results", token)  # a captured result, replayed
        await stack.wait(lambda s: s.applied["results"] + s.refused["replayed"] == 3)
    assert stack.stats.applied["events"] == 3
    assert stack.stats.applied["results"] == 2
    assert stack.stats.refused["replayed"] == 1


async def test_a_store_failure_mid_batch_applies_nothing_and_acknowledges_nothing_until_it_heals(
    stack: Stack,
) -> None:
    registry = stack.services.registry
    acked_before = stack.stats.acked
    with StoreFault(registry, "vehicle_state") as fault:
        async with stack.car(LEON) as car, stack.car(BORN) as born:
            await car.send_status(status(at=stack.clock.now()))
            await born.send_status(status(at=stack.clock.now()))
            await fault.wait_failures(3)
            # The seq claims ran before the failing statement: rolled back with it.
            assert await registry.seq_mark(seq_stream(LEON, TopicKind.STATUS)) is None
            assert await registry.seq_mark(seq_stream(BORN, TopicKind.STATUS)) is None
            assert await registry.get_vehicle_state(LEON) is None
            assert stack.stats.applied["status"] == 0
            assert stack.stats.acked == acked_before
            assert stack.handler.link.unacknowledged == 2
            fault.heal()
            await stack.wait(lambda s: s.applied["status"] == 2)
    assert stack.stats.refused == {}
    assert stack.stats.store_retries >= 2
    assert stack.stats.acked == acked_before + 2
    assert stack.handler.link.unacknowledged == 0
    assert await _updated_at(stack, LEON) == stack.clock.now()


async def test_when_the_store_stays_away_the_cloud_reconnects_and_the_broker_delivers_again(
    mosquitto: MosquittoBroker, registry_url: str
) -> None:
    # A kept session: what the cloud did not acknowledge stays with the broker across the reconnect.
    config = HandlerConfig(session_expiry_s=60, car_workers=1, app_workers=1, store_retry_s=0.2)
    async with cloud_stack(mosquitto, registry_url, config=config) as stack:
        with StoreFault(stack.services.registry, "vehicle_state") as fault:
            async with stack.car(LEON) as car:
                await car.send_status(status(at=stack.clock.now()))
                await stack.handler.link.wait_connects(2, timeout=WAIT)  # gave up, reconnected
                assert stack.stats.applied["status"] == 0
                fault.heal()
                await stack.wait(lambda s: s.applied["status"] == 1)
        assert stack.stats.disconnects >= 1
        assert stack.stats.handler_errors >= 1
        state = await stack.services.registry.get_vehicle_state(LEON)
        assert state is not None
        assert state.updated_at == stack.clock.now()


async def test_after_a_reconnect_with_a_kept_session_retained_statuses_do_not_come_back(
    mosquitto: MosquittoBroker, registry_url: str
) -> None:
    config = HandlerConfig(session_expiry_s=60, car_workers=1, app_workers=1)
    async with cloud_stack(mosquitto, registry_url, config=config) as stack, stack.car(LEON) as car:
        await car.publish("status", car.sign(MessageType.STATUS, status(at=stack.clock.now())), retain=True)
        await stack.wait(lambda s: s.applied["status"] == 1)
        stack.handler.link.reconnect("test")
        await stack.handler.link.wait_connects(2, timeout=WAIT)
        # The same car's next status reaches the same worker after anything the broker resent on subscribing.
        await car.publish("status", car.sign(MessageType.STATUS, status(at=stack.clock.now() + 1)), retain=True)
        await stack.wait(lambda s: s.applied["status"] == 2)
        assert stack.stats.refused == {}
