"""`sim/{vin}/control/results` (SPEC §2.1, §7): a car writes only its own control replies, the operator reads
every car's; on the real Mosquitto with the generated ACL, and in the policy the embedded broker evaluates.

A denial is proven as in test_mosquitto_acl_matrix: the forbidden message first, then a permitted marker on the
same path; once the observer has the marker, the forbidden message would have arrived before it."""

from __future__ import annotations

import random

import pytest

from broker.mosquitto import AclAction, AclPolicy, ListenerKind
from tcu_sim.protocol import Topics, generate_vin
from tcu_sim.testing import Inbox, MosquittoBroker

_rng = random.Random(20261205)
CAR, OTHER = generate_vin(_rng), generate_vin(_rng)
WAIT = 5.0
FORBIDDEN = b"forbidden"


@pytest.mark.mosquitto
async def test_a_car_answers_only_on_its_own_results_topic_and_the_operator_reads_them(
    mosquitto: MosquittoBroker,
) -> None:
    topics = Topics()
    async with mosquitto.client("operator") as operator, Inbox(operator, name="operator") as inbox:
        await operator.subscribe(topics.all_control_results(), qos=1)
        async with mosquitto.client(CAR) as car:
            await car.publish(topics.control_results(OTHER), FORBIDDEN, qos=1)  # speaking for another car
            await car.publish(f"sim/{CAR}/control", FORBIDDEN, qos=1)  # its own inbound topic: the operator's
            await car.publish(topics.control_results(CAR), b'{"id":"c-1","ok":true}', qos=1)
        await inbox.wait_for(topics.control_results(CAR), b'{"id":"c-1","ok":true}', timeout=WAIT)
        assert [m.topic.value for m in inbox.messages] == [topics.control_results(CAR)]


def test_the_policy_the_embedded_broker_evaluates_says_the_same() -> None:
    policy = AclPolicy(prefix="p")
    device = ListenerKind.DEVICE
    assert policy.allows(CAR, device, AclAction.PUBLISH, f"p/sim/{CAR}/control/results")
    assert not policy.allows(CAR, device, AclAction.PUBLISH, f"p/sim/{OTHER}/control/results")
    assert not policy.allows(CAR, device, AclAction.SUBSCRIBE, f"p/sim/{CAR}/control/results")
    assert not policy.allows(CAR, device, AclAction.SUBSCRIBE, "p/sim/+/control/results")
    assert policy.allows("operator", device, AclAction.SUBSCRIBE, "p/sim/+/control/results")
    assert not policy.allows("cloud", device, AclAction.PUBLISH, f"p/sim/{CAR}/control/results")
    assert Topics("p").all_control_results() == "p/sim/+/control/results"
