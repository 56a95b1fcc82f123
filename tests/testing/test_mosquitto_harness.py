"""tcu_sim.testing: the Mosquitto harness itself — restarts keep persistent sessions, failures quote the log, the
missing-binary rule, the client helpers."""

from __future__ import annotations

import random
import re
import socket
from collections.abc import Callable
from pathlib import Path

import aiomqtt
import pytest

from tcu_sim.protocol import TopicKind, Topics, generate_vin
from tcu_sim.testing import Inbox, MosquittoBroker, MosquittoError, find_mosquitto
from tcu_sim.testing.plugin import require_mosquitto

VIN = generate_vin(random.Random("harness"))
WAIT = 5.0


async def _queue_a_command_for_an_offline_car(broker: MosquittoBroker) -> None:
    async with broker.client(VIN, protocol=aiomqtt.ProtocolVersion.V311, clean_session=False) as car:
        await car.subscribe(f"tcu/{VIN}/commands", qos=1)
        await car.publish(f"tcu/{VIN}/status", b"retained status", qos=1, retain=True)
    async with broker.client("cloud") as cloud:
        await cloud.publish(f"tcu/{VIN}/commands", b"queued while offline", qos=1)


async def _car_gets_the_queued_command(broker: MosquittoBroker) -> None:
    client = broker.client(VIN, protocol=aiomqtt.ProtocolVersion.V311, clean_session=False)
    async with client, Inbox(client, name=VIN) as inbox:
        await inbox.wait_for(f"tcu/{VIN}/commands", b"queued while offline", timeout=WAIT)
    async with broker.client("cloud") as cloud, Inbox(cloud, name="cloud") as cloud_inbox:
        await cloud.subscribe("tcu/+/status", qos=1)
        await cloud_inbox.wait_for(f"tcu/{VIN}/status", b"retained status", timeout=WAIT)


@pytest.mark.mosquitto
async def test_restart_keeps_ports_sessions_queued_and_retained_messages(mosquitto: MosquittoBroker) -> None:
    port, app_port, pid = mosquitto.port, mosquitto.app_port, mosquitto.pid
    await _queue_a_command_for_an_offline_car(mosquitto)

    await mosquitto.stop()
    assert not mosquitto.running
    assert (await mosquitto.probe("cloud")).accepted is False
    await mosquitto.start()

    assert (mosquitto.port, mosquitto.app_port) == (port, app_port)
    assert mosquitto.pid != pid
    await _car_gets_the_queued_command(mosquitto)
    assert mosquitto.starts == 2


@pytest.mark.mosquitto
async def test_kill_after_save_loses_nothing(mosquitto: MosquittoBroker) -> None:
    await _queue_a_command_for_an_offline_car(mosquitto)
    await mosquitto.save()
    await mosquitto.kill()
    assert not mosquitto.running
    await mosquitto.start()
    await _car_gets_the_queued_command(mosquitto)


@pytest.mark.mosquitto
async def test_log_is_captured(mosquitto: MosquittoBroker) -> None:
    mark = mosquitto.log_mark()
    async with mosquitto.client(VIN):
        pass
    line = await mosquitto.wait_for_log(re.compile(rf"New client connected .* as {VIN} .*u'{VIN}'"), since=mark)
    assert VIN in line
    assert mosquitto.log_path.read_text().count("running") >= 1
    assert "mosquitto log" in mosquitto.log_tail()


@pytest.mark.mosquitto
async def test_a_broker_that_cannot_start_says_why(mosquitto_factory: Callable[..., MosquittoBroker]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        broker = mosquitto_factory(port=taken.getsockname()[1], start_timeout=5.0)
        with pytest.raises(MosquittoError, match="Address already in use"):
            await broker.start()
    assert not broker.running


@pytest.mark.mosquitto
async def test_two_brokers_run_side_by_side_with_their_own_settings(
    mosquitto: MosquittoBroker, mosquitto_factory: Callable[..., MosquittoBroker], unique_topic: str
) -> None:
    topics = Topics(unique_topic)
    async with mosquitto_factory(topic_prefix=unique_topic, app_users={"app-x": "secret-x"}) as other:
        assert {other.port, other.app_port}.isdisjoint({mosquitto.port, mosquitto.app_port})
        assert other.app_password("app-x") == "secret-x"
        async with other.client("cloud") as cloud, Inbox(cloud) as inbox, other.client(VIN) as car:
            await cloud.subscribe(topics.all_tcu(TopicKind.STATUS), qos=1)
            await car.publish(f"tcu/{VIN}/status", b"outside the prefix: denied", qos=1)
            await car.publish(topics.status(VIN), b"inside", qos=1)
            await inbox.wait_for(topics.status(VIN), b"inside", timeout=WAIT)
            assert inbox.topics() == [topics.status(VIN)]


@pytest.mark.mosquitto
async def test_client_helpers(mosquitto: MosquittoBroker) -> None:
    # TLS parameters (file paths) work as well as SSL contexts.
    async with aiomqtt.Client(
        mosquitto.host, mosquitto.port, identifier=VIN, tls_params=mosquitto.tls_parameters(VIN)
    ) as car:
        await car.publish(f"tcu/{VIN}/connection", b"online", qos=1)
    password = await mosquitto.add_app_user("app-new")
    assert (await mosquitto.probe_app("app-new", password)).accepted
    assert "app-new" in mosquitto.app_users
    assert repr(mosquitto).startswith(f"MosquittoBroker(127.0.0.1:{mosquitto.port}")
    assert password not in repr(mosquitto)


@pytest.mark.mosquitto
async def test_plaintext_app_listener(mosquitto_factory: Callable[..., MosquittoBroker]) -> None:
    async with mosquitto_factory(app_tls=False, app_users={"app-1": "pw"}) as broker:
        assert broker.plain_port == broker.app_port
        assert (await broker.probe_app("app-1")).accepted
        async with broker.app_client("app-1") as app:
            await app.publish("app/app-1/requests", b"{}", qos=1)


def test_missing_mosquitto_skips_locally_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TCU_SIM_MOSQUITTO", str(tmp_path / "no-such-mosquitto"))
    assert find_mosquitto() is None
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="MOSQUITTO NOT FOUND"):
        require_mosquitto()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="MOSQUITTO NOT FOUND"):
        require_mosquitto()


def test_mosquitto_is_found_through_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    real = find_mosquitto()
    if real is None:
        pytest.skip("no mosquitto installed to point at")
    monkeypatch.setenv("TCU_SIM_MOSQUITTO", str(real))
    assert require_mosquitto() == real


def test_unique_topic(unique_topic: str) -> None:
    assert re.fullmatch(r"test-(main|gw\d+)-[0-9a-f]{10}", unique_topic)
    assert Topics(unique_topic).prefix == unique_topic
