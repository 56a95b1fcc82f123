"""The `amqtt_broker` fixture: an open embedded broker that works with aiomqtt (MQTT 3.1.1)."""

from __future__ import annotations

import aiomqtt
import pytest

from broker.embedded import EmbeddedBroker
from tcu_sim.testing import Inbox


async def test_publish_and_receive(amqtt_broker: EmbeddedBroker, unique_topic: str) -> None:
    assert amqtt_broker.running
    assert not amqtt_broker.secured
    topic = f"{unique_topic}/tcu/status"
    async with (
        aiomqtt.Client(amqtt_broker.host, amqtt_broker.port, identifier="subscriber") as subscriber,
        Inbox(subscriber, name="subscriber") as inbox,
        aiomqtt.Client(amqtt_broker.host, amqtt_broker.port, identifier="publisher") as publisher,
    ):
        await subscriber.subscribe(f"{unique_topic}/#", qos=1)
        await publisher.publish(topic, b"hello", qos=1)
        message = await inbox.wait_for(topic, timeout=5.0)
        assert message.payload == b"hello"
        assert message.qos == 1


async def test_mqtt5_is_refused(amqtt_broker: EmbeddedBroker) -> None:
    client = aiomqtt.Client(
        amqtt_broker.host, amqtt_broker.port, identifier="v5", protocol=aiomqtt.ProtocolVersion.V5, timeout=5.0
    )
    with pytest.raises(aiomqtt.MqttError):
        async with client:
            pass


async def test_stop_closes_the_listener(amqtt_broker: EmbeddedBroker) -> None:
    await amqtt_broker.stop()
    assert not amqtt_broker.running
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client(amqtt_broker.host, amqtt_broker.port, identifier="late", timeout=2.0):
            pass
