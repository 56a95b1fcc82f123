"""The TCU session over a real Mosquitto (TLS, ACLs): commands, refusals, outbox, reconnect."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from tcu_sim.clock import SystemClock, VirtualClock
from tcu_sim.protocol import (
    CLOUD,
    KeySet,
    MessageType,
    SeqGuard,
    Signer,
    SigningKey,
    Topics,
    Verified,
    Verifier,
    encode_json,
    generate_vin,
)
from tcu_sim.testing import Inbox, MosquittoBroker
from tcu_sim.transport import Backoff, BrokerAddress, LinkPool, SeqStore, TcuConfig, TcuSession
from tcu_sim.vehicle import Vehicle

pytestmark = pytest.mark.mosquitto

TOPICS = Topics()
_TYPES = {"status": MessageType.STATUS, "events": MessageType.EVENT, "results": MessageType.RESULT}


@dataclass
class Car:
    session: TcuSession
    key: SigningKey
    task: asyncio.Task[None]

    @property
    def vin(self) -> str:
        return self.session.vin


class Rig:
    """A broker, a cloud-side observer that verifies what cars send, and cars driven by one LinkPool."""

    def __init__(self, broker: MosquittoBroker, pool: LinkPool, cloud: aiomqtt.Client, inbox: Inbox) -> None:
        self.broker = broker
        self.pool = pool
        self.cloud = cloud
        self.inbox = inbox
        self.clock = SystemClock()
        self.cloud_key = SigningKey.generate("cloud-1")
        self.signer = Signer(self.cloud_key, issuer=CLOUD, clock=self.clock, ttl_s=60)
        self.fleet_keys = KeySet()
        self.verifier = Verifier(self.fleet_keys, audience=CLOUD, clock=self.clock)
        self.cars: list[Car] = []
        self.car_keys: dict[str, SigningKey] = {}
        self.address = BrokerAddress(broker.host, broker.port, connect_timeout_s=5.0)
        self.command_seq = 0

    async def add_car(
        self, seed: int, *, state: Path | None = None, backoff: Backoff | None = None, clock: Any = None
    ) -> Car:
        rng = random.Random(seed)
        vin = generate_vin(rng)
        key = self.car_keys.setdefault(vin, SigningKey.generate(vin))  # a restarted car keeps its key
        self.fleet_keys.add(key.public_key())
        vehicle = Vehicle.new(vin, "leon", "media_system", (41.39, 2.17), rng, (clock or self.clock).now())
        session = TcuSession(
            vehicle,
            signing_key=key,
            cloud_keys=KeySet([self.cloud_key.public_key()]),
            clock=clock or self.clock,
            rng=rng,
            seq_store=SeqStore(state / vin / "seq.json" if state else None),
            config=TcuConfig(status_interval_s=3600, backoff=backoff or Backoff(base_s=0.05, cap_s=0.5)),
            tls=self.broker.ssl_context(vin),
        )
        task = asyncio.create_task(session.run(self.pool, self.address), name=f"test-car[{vin}]")
        car = Car(session, key, task)
        self.cars.append(car)
        await session.wait_online(10)
        return car

    def command(self, vin: str, op: str, params: dict[str, Any] | None = None, **claims: Any) -> tuple[str, str]:
        self.command_seq += 1
        command_id = f"cmd-{self.command_seq}"
        signer = claims.pop("signer", self.signer)
        token = signer.sign(
            MessageType.COMMAND,
            aud=claims.pop("aud", vin),
            seq=claims.pop("seq", self.command_seq),
            body={"command_id": command_id, "op": op, "params": params or {}},
            **claims,
        )
        return command_id, token

    async def send(self, vin: str, token: str) -> None:
        await self.cloud.publish(TOPICS.commands(vin), token.encode(), qos=1)

    def verified(self, vin: str, kind: str) -> list[Verified]:
        return [
            self.verifier.verify(bytes(m.payload), typ=_TYPES[kind], issuer=vin, kid=vin)
            for m in self.inbox.received(f"tcu/{vin}/{kind}")
        ]

    async def wait_result(self, vin: str, command_id: str, state: str, timeout: float = 5.0) -> dict[str, Any]:
        def found(_: list[aiomqtt.Message]) -> bool:
            return any(v.body["command_id"] == command_id and v.body["state"] == state
                       for v in self.verified(vin, "results"))

        await self.inbox.wait_until(found, timeout=timeout)
        return next(v.body for v in self.verified(vin, "results")
                    if v.body["command_id"] == command_id and v.body["state"] == state)


@contextlib.asynccontextmanager
async def rig_for(broker: MosquittoBroker) -> AsyncIterator[Rig]:
    async with (
        LinkPool() as pool,
        broker.client("cloud", identifier="cloud-observer") as cloud,
    ):
        for kind in ("status", "events", "results", "connection"):
            await cloud.subscribe(f"tcu/+/{kind}", qos=1)
        async with Inbox(cloud, name="cloud") as inbox:
            rig = Rig(broker, pool, cloud, inbox)
            try:
                yield rig
            finally:
                for car in rig.cars:
                    car.task.cancel()
                for car in rig.cars:
                    with contextlib.suppress(asyncio.CancelledError):
                        await car.task


@pytest.fixture
async def rig(mosquitto: MosquittoBroker) -> AsyncIterator[Rig]:
    async with rig_for(mosquitto) as rig:
        yield rig


async def test_car_announces_itself_with_retained_online_and_a_signed_status(rig: Rig) -> None:
    car = await rig.add_car(1)
    await rig.inbox.wait_for(f"tcu/{car.vin}/connection", b"online")
    await rig.inbox.wait_for(f"tcu/{car.vin}/status")
    (status, *_) = rig.verified(car.vin, "status")
    assert status.iss == car.vin
    assert status.aud == CLOUD
    assert status.body["locked"] is True
    assert status.body["connection"]["online"] is True


async def test_signed_unlock_is_executed_and_answered(rig: Rig) -> None:
    car = await rig.add_car(2)
    assert car.session.vehicle.locked
    command_id, token = rig.command(car.vin, "unlock")
    await rig.send(car.vin, token)
    await rig.wait_result(car.vin, command_id, "succeeded")
    states = [v.body["state"] for v in rig.verified(car.vin, "results") if v.body["command_id"] == command_id]
    assert states == ["accepted", "succeeded"]
    assert not car.session.vehicle.locked

    def unlocked_status(_: list[aiomqtt.Message]) -> bool:
        return any(v.body["locked"] is False for v in rig.verified(car.vin, "status"))

    await rig.inbox.wait_until(unlocked_status)


def _flip_signature(token: str) -> str:
    head, payload, sig = token.split(".")
    return f"{head}.{payload}.{('A' if sig[0] != 'A' else 'B')}{sig[1:]}"


@pytest.mark.parametrize(
    ("forge", "reason"),
    [
        pytest.param(lambda rig, car: rig.command(car.vin, "unlock"), "bad_signature", id="bad-signature"),
        pytest.param(
            lambda rig, car: rig.command(
                car.vin, "unlock", signer=Signer(SigningKey.generate("cloud-9"), issuer=CLOUD, clock=rig.clock)
            ),
            "unknown_key",
            id="unknown-key",
        ),
        pytest.param(
            lambda rig, car: rig.command(car.vin, "unlock", aud=generate_vin(random.Random(99))),
            "wrong_audience",
            id="other-vin",
        ),
        pytest.param(
            lambda rig, car: rig.command(car.vin, "unlock", exp=rig.clock.now() - 120),
            "expired",
            id="expired",
        ),
    ],
)
async def test_refused_commands_are_rejected_with_their_reason_and_change_nothing(
    rig: Rig, forge: Callable[[Rig, Car], tuple[str, str]], reason: str
) -> None:
    car = await rig.add_car(3)
    vehicle = car.session.vehicle
    before = (vehicle.locked, vehicle.revision, car.session.seq.last_command_seq)
    command_id, token = forge(rig, car)
    if reason == "bad_signature":
        token = _flip_signature(token)
    await rig.send(car.vin, token)
    result = await rig.wait_result(car.vin, command_id, "rejected")
    assert result["reason"] == reason
    assert (vehicle.locked, vehicle.revision, car.session.seq.last_command_seq) == before
    assert car.session.stats.rejected_by_reason == {reason: 1}


async def test_replayed_command_is_rejected_and_not_executed_twice(rig: Rig) -> None:
    car = await rig.add_car(4)
    command_id, token = rig.command(car.vin, "unlock")
    await rig.send(car.vin, token)
    await rig.wait_result(car.vin, command_id, "succeeded")
    lock_id, lock_token = rig.command(car.vin, "lock")
    await rig.send(car.vin, lock_token)
    await rig.wait_result(car.vin, lock_id, "succeeded")
    revision = car.session.vehicle.revision
    await rig.send(car.vin, token)  # the captured unlock, replayed
    result = await rig.wait_result(car.vin, command_id, "rejected")
    assert result["reason"] == "replayed"
    assert car.session.vehicle.locked
    assert car.session.vehicle.revision == revision


async def test_replay_protection_survives_a_restart_of_the_car(rig: Rig, tmp_path: Path) -> None:
    car = await rig.add_car(5, state=tmp_path)
    command_id, token = rig.command(car.vin, "unlock")
    await rig.send(car.vin, token)
    await rig.wait_result(car.vin, command_id, "succeeded")
    last_seq = max(v.seq for v in rig.verified(car.vin, "results"))
    car.task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await car.task
    rig.cars.remove(car)
    restarted = await rig.add_car(5, state=tmp_path)  # same seed: same VIN, same state directory
    assert restarted.vin == car.vin
    await rig.send(car.vin, token)
    result = await rig.wait_result(car.vin, command_id, "rejected")
    assert result["reason"] == "replayed"
    newest = [v for v in rig.verified(car.vin, "results") if v.body["state"] == "rejected"]
    assert newest[0].seq > last_seq, "the car's own seq must continue above what it sent before the restart"


async def test_offline_car_sends_its_outbox_when_back_and_every_seq_arrives_once(rig: Rig) -> None:
    car = await rig.add_car(6)
    session = car.session
    await rig.inbox.wait_for(f"tcu/{car.vin}/status")
    session.go_offline()
    await rig.inbox.wait_for(f"tcu/{car.vin}/connection", b"offline")  # the broker fired the last will
    control = encode_json({"action": "open_door", "params": {"door": "front_left"}})
    # People keep using the car while it has no network: what it reports waits in the outbox.
    session.handle_control(encode_json({"action": "unlock_key", "params": {}}))
    session.handle_control(control)
    session.send_status(force=True)
    assert len(session.outbox) >= 3
    waiting = len(session.outbox)
    last_waiting_seq = session.seq.last_issued  # everything up to here was in the outbox
    session.go_online()
    await session.wait_online(10)

    def all_seqs() -> list[int]:
        return sorted(v.seq for kind in ("status", "events", "results") for v in rig.verified(car.vin, kind))

    def outbox_delivered(_: list[aiomqtt.Message]) -> bool:
        return max(all_seqs(), default=0) >= last_waiting_seq

    await rig.inbox.wait_until(outbox_delivered)
    received = [seq for seq in all_seqs() if seq <= last_waiting_seq]
    guard = SeqGuard()
    seen: list[int] = []
    for seq in received:
        if guard.last(car.vin) is None or seq > (guard.last(car.vin) or 0):
            guard.record(car.vin, seq)
            seen.append(seq)
    assert received == seen, f"duplicates among {received}"
    assert seen == list(range(seen[0], seen[0] + len(seen))), f"gap in {seen}"
    assert waiting <= len(seen)
    assert any(v.body.get("type") == "door_opened" for v in rig.verified(car.vin, "events"))


async def test_every_car_reconnects_after_the_broker_restarts(mosquitto: MosquittoBroker) -> None:
    async with LinkPool() as pool:
        rig = Rig(mosquitto, pool, None, None)  # type: ignore[arg-type]  # no observer: the broker goes away
        cars = [await rig.add_car(100 + i, backoff=Backoff(base_s=0.2, cap_s=1.0)) for i in range(5)]
        try:
            await mosquitto.stop()
            for car in cars:
                await car.session.wait_offline(10)
            await mosquitto.start()
            for car in cars:
                await car.session.wait_online(15)
            assert all(c.session.stats.connects == 2 for c in cars)
            assert all(c.session.stats.disconnects == 1 for c in cars)
        finally:
            for car in cars:
                car.task.cancel()
            for car in cars:
                with contextlib.suppress(asyncio.CancelledError):
                    await car.task


def test_backoff_is_capped_exponential_with_full_jitter() -> None:
    backoff = Backoff(base_s=0.5, cap_s=30.0)
    rng = random.Random(7)
    for attempt in range(12):
        ceiling = min(30.0, 0.5 * 2**attempt)
        delays = [backoff.delay(attempt, rng) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in delays)
        # Full jitter: spread over the whole range, not bunched at the ceiling (no reconnect waves).
        assert min(delays) < ceiling * 0.1
        assert max(delays) > ceiling * 0.9


async def test_status_is_sent_every_interval_on_the_virtual_clock(rig: Rig) -> None:
    clock = VirtualClock(start=rig.clock.now())
    car = await rig.add_car(7, clock=clock)  # status interval one hour, first status at a random offset
    verifier = Verifier(rig.fleet_keys, audience=CLOUD, clock=clock, skew_s=4 * 3600)
    start = clock.now()

    def statuses() -> int:
        return len(rig.inbox.received(f"tcu/{car.vin}/status"))

    await rig.inbox.wait_for(f"tcu/{car.vin}/status")  # the one sent on connect
    before = statuses()
    await clock.advance(3 * 3600 + 1)
    await rig.inbox.wait_until(lambda _: statuses() >= before + 3)
    last = rig.inbox.received(f"tcu/{car.vin}/status")[-1]
    verified = verifier.verify(bytes(last.payload), typ=MessageType.STATUS, issuer=car.vin)
    assert verified.iat > start + 3600, "statuses carry the car's (virtual) time"
