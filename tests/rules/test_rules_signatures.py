"""R18 over MQTT: the cloud sends a car only commands it signed (the real TCU verifies each with the pinned cloud
key and refuses any other), and acts only on car messages whose signature it verified (forgeries published with a
car's broker certificate, but not its signing key, change nothing)."""

from __future__ import annotations

import pytest
from rules_kit import cloud_handled, garage, record_commands, wait_notification

from broker.cloud import PRIMARY_CONFIRMATION
from tcu_sim.protocol import (
    CLOUD,
    Command,
    CommandOp,
    Event,
    EventType,
    MessageType,
    Signer,
    SigningKey,
    Topics,
    Verifier,
    encode_json,
)
from tcu_sim.testing import AppUserFactory, SimBroker, SimClock, SimCloud, SimFleet


async def test_r18_the_cloud_sends_only_commands_it_signed_and_acts_only_on_car_messages_it_verified(
    fleet: SimFleet,
    cloud: SimCloud,
    clock: SimClock,
    mqtt_broker: SimBroker,
    app_user_factory: AppUserFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    leon, ateca = fleet.car("leon"), fleet.car("ateca")
    topics = Topics(cloud.topic_prefix)
    owner = await app_user_factory("owner@example.com")
    received = record_commands(leon, monkeypatch)
    await owner.enrol(leon)
    await wait_notification(leon, PRIMARY_CONFIRMATION)
    assert await owner.command(leon, "unlock", expect="succeeded") == "succeeded"
    assert await owner.command(leon, "lock", expect="succeeded") == "succeeded"

    # Everything the cloud sent the car verifies with the cloud key the car pins, addressed to this car.
    pinned = Verifier(fleet.state.load_cloud_keys(), audience=leon.vin, clock=clock)
    sent = [pinned.verify(payload, typ=MessageType.COMMAND, issuer=CLOUD) for payload in received.payloads]
    assert [v.body["op"] for v in sent] == ["infotainment.notify", "unlock", "lock"]
    assert leon.session.stats.commands_rejected == 0

    # Commands the cloud did not sign, published on the car's command topic with the cloud's broker certificate
    # (not its key): one signed by another key under the cloud's key id, one not signed at all. The car refuses
    # both (and says so in signed `rejected` results); it stays locked.
    impostor = Signer(SigningKey.generate("cloud-1"), CLOUD, clock)
    forged = impostor.sign(
        MessageType.COMMAND, aud=leon.vin, seq=1_000_000,
        body=Command(command_id="cmd-forged", op=CommandOp.UNLOCK, params={}),
    )
    unsigned = encode_json({"command_id": "cmd-unsigned", "op": "unlock", "params": {}})
    results = cloud.stats.applied["results"]
    # A cloud certificate of its own: the client id is the CN, and `cloud` is the running cloud's (SPEC §7).
    with mqtt_broker.lease_cloud() as stolen:
        async with mqtt_broker.client(stolen) as attacker:
            await attacker.publish(topics.commands(leon.vin), forged.encode(), qos=1)
            await attacker.publish(topics.commands(leon.vin), unsigned, qos=1)
    await cloud_handled(cloud, lambda s: s.applied["results"] >= results + 2)  # the car's replies, taken in
    assert leon.session.stats.rejected_by_reason == {"bad_signature": 1, "malformed": 1}
    assert leon.status().locked is True

    # Car messages the car did not sign, published with the Leon's own broker certificate (not its key): a status
    # signed by a stranger under the Leon's key id, a factory reset signed with another car's real key, and an
    # unsigned status. The cloud refuses all three: its view of the car and the garage stay as they were.
    async def settled() -> bool | None:
        state = await cloud.vehicle_state(leon.vin)
        return True if state is not None and state.status is not None and state.status["locked"] is True else None

    async def what() -> str:
        return f"the cloud's view of {leon.vin}: {await cloud.vehicle_state(leon.vin)}"

    await cloud.wait_until(settled, timeout=10, what=what)
    # The forger holds the Leon's certificate, and the broker lets one connection per certificate in (the client
    # id is the CN, SPEC §7): the Leon is away, and the cloud knows it, while its clone talks.
    await leon.go_offline()

    async def offline() -> bool | None:
        state = await cloud.vehicle_state(leon.vin)
        return True if state is not None and not state.online else None

    await cloud.wait_until(offline, timeout=10, what=what)
    before = await cloud.vehicle_state(leon.vin)
    fake = leon.status().model_copy(update={"updated_at": clock.now() + 10, "locked": False})
    stranger = Signer(SigningKey.generate(leon.vin), leon.vin, clock)
    other_car = Signer(fleet.state.load_car_key(ateca.vin), leon.vin, clock)
    forgeries = [
        (topics.status(leon.vin), stranger.sign(MessageType.STATUS, aud=CLOUD, seq=1_000_000, body=fake).encode()),
        (
            topics.events(leon.vin),
            other_car.sign(
                MessageType.EVENT, aud=CLOUD, seq=1_000_000, body=Event(type=EventType.FACTORY_RESET, at=clock.now())
            ).encode(),
        ),
        (topics.status(leon.vin), encode_json(fake.model_dump(mode="json"))),
    ]
    refused = sum(cloud.stats.refused.values())
    applied = dict(cloud.stats.applied)
    async with mqtt_broker.client(leon.vin) as attacker:
        for topic, payload in forgeries:
            await attacker.publish(topic, payload, qos=1)
    await cloud_handled(cloud, lambda s: sum(s.refused.values()) >= refused + 3)
    assert dict(cloud.stats.applied) == applied
    assert await cloud.vehicle_state(leon.vin) == before
    assert await garage(owner) == {leon.vin: ("primary", "active")}
    assert (await owner.app.vehicle_status(leon.vin))["status"]["locked"] is True

    # The real car and the cloud still trust each other.
    await leon.go_online()
    assert await owner.command(leon, "unlock", expect="succeeded") == "succeeded"
    await leon.wait_for(locked=False)
