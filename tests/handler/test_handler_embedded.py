"""On the embedded broker (amqtt), which delivers retained messages during a SUBSCRIBE and grants it only once they
are acknowledged, the cloud — acknowledging only what it applied — still starts: it takes and applies messages
while it is subscribing."""

from __future__ import annotations

import random
from pathlib import Path

import aiomqtt
from handler_kit import CAR_KEYS, CLOUD_KEY, FLEET, LEON, PASSWORDS, SECRET, START, WAIT, fleet_keys, status

from broker.cloud import CloudServices
from broker.embedded import EmbeddedBroker
from broker.handler import CloudHandler, HandlerConfig
from broker.registry import open_registry
from tcu_sim.clock import VirtualClock
from tcu_sim.protocol import CLOUD, MessageType, Signer, Topics


async def test_retained_statuses_delivered_before_the_subscription_is_granted_are_applied(
    amqtt_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    clock = VirtualClock(START)
    topics = Topics()
    signer = Signer(CAR_KEYS[LEON], LEON, clock)
    token = signer.sign(MessageType.STATUS, aud=CLOUD, seq=1, body=status(at=START)).encode()
    async with aiomqtt.Client(amqtt_broker.host, amqtt_broker.port, identifier=LEON) as car:
        await car.publish(topics.status(LEON), token, qos=1, retain=True)
    config = HandlerConfig(protocol="3.1.1", session_expiry_s=0, car_workers=1, app_workers=1)
    assert config.ack_after_apply
    async with open_registry(f"sqlite://{tmp_path}/cloud.db") as registry:
        services = CloudServices(registry, clock, SECRET, rng=random.Random(1), passwords=PASSWORDS)
        await services.vehicles.import_vehicles(FLEET)
        handler = CloudHandler(
            config, services, clock, host=amqtt_broker.host, port=amqtt_broker.port, cloud_key=CLOUD_KEY,
            fleet_keys=fleet_keys(), rng=random.Random(2),
        )
        async with handler:
            await handler.wait_ready(WAIT)
            # amqtt granted the subscription only after our PUBACK, which went out once the status was applied.
            assert handler.stats.applied["status"] == 1
            assert handler.stats.acked >= 1
        assert handler.stats.connects == 1
        state = await registry.get_vehicle_state(LEON)
    assert state is not None
    assert state.updated_at == START
