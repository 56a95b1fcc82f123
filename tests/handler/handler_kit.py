"""Helpers for the cloud handler tests: the cloud on a real Mosquitto, app clients, and a hand-made car.

The hand-made car (`FakeCar`) signs whatever a test tells it to — including forged, misaddressed and replayed
messages, which the real TCU never sends — and records the commands the cloud publishes to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiomqtt

from broker.cloud import CloudConfig, CloudServices, PasswordHasher, ServerSecret
from broker.handler import CloudHandler, HandlerConfig, HandlerStats
from broker.registry import RegistryUnavailable, VehicleRecord, open_registry
from tcu_sim.app import AppClient, Mail
from tcu_sim.clock import VirtualClock
from tcu_sim.protocol import (
    CLOUD,
    CommandResult,
    Event,
    KeySet,
    MessageType,
    ResultState,
    Signer,
    SigningKey,
    StatusSnapshot,
    Topics,
    Verified,
    Verifier,
    generate_vin,
)
from tcu_sim.testing import Inbox, MosquittoBroker

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z
DAY = 86_400.0
SECRET = ServerSecret(b"tcu-sim handler test secret 32by")
PASSWORDS = PasswordHasher.for_tests()
PASSWORD = "correct horse battery"
SPIN = "4711"
WAIT = 10.0  # seconds any single wait in these tests may take before it fails

_vins = random.Random(4242)
LEON = generate_vin(_vins)  # tkov, heater, ventilation
ATECA_RADIO = generate_vin(_vins)  # pairing code
BORN = generate_vin(_vins)  # electric: no aux heater
UNKNOWN_VIN = generate_vin(_vins)  # valid, never imported

FLEET = [
    VehicleRecord(LEON, "leon", "media_system", START - 100 * DAY, "test"),
    VehicleRecord(ATECA_RADIO, "ateca", "radio", START - 100 * DAY, "test"),
    VehicleRecord(BORN, "born", "navigation", START - 100 * DAY, "test"),
]
CAR_KEYS = {v.vin: SigningKey.generate(v.vin) for v in FLEET}
CLOUD_KEY = SigningKey.generate("cloud-1")


def fleet_keys() -> KeySet:
    """The fleet JWKS of the test cars."""
    return KeySet(key.public_key() for key in CAR_KEYS.values())


def cloud_keys() -> KeySet:
    """The cloud JWKS, as a car pins it."""
    return KeySet([CLOUD_KEY.public_key()])


def status(*, at: float = START, privacy: str = "off", locked: bool = True) -> StatusSnapshot:
    """A parked car's status snapshot."""
    door = {"open": False, "locked": locked}
    return StatusSnapshot.model_validate(
        {
            "updated_at": at,
            "connection": {"online": True, "signal_pct": 80},
            "privacy_mode": privacy,
            "ignition": "off",
            "moving": False,
            "locked": locked,
            "doors": {d: door for d in ("front_left", "front_right", "rear_left", "rear_right", "trunk", "hood")},
            "windows": {w: "closed" for w in ("front_left", "front_right", "rear_left", "rear_right")},
            "lights": "off",
            "parking_position": None if privacy != "off" else {"lat": 41.39, "lon": 2.17, "parked_at": at - 60},
            "aux_heating": {"state": "off", "remaining_min": 0, "target_temperature_c": None},
            "battery_12v_v": 12.6,
            "fuel_level_pct": 60.0,
            "range_km": 500.0,
            "odometer_km": 12000.0,
            "health": {"warnings": [], "inspection_due_days": 200, "oil_service_due_km": 9000},
        }
    )


@dataclass
class Stack:
    """The cloud handler on a Mosquitto, over a registry, on a virtual clock."""

    broker: MosquittoBroker
    clock: VirtualClock
    services: CloudServices
    handler: CloudHandler
    topics: Topics = field(default_factory=Topics)

    @property
    def stats(self) -> HandlerStats:
        """The handler's counters."""
        return self.handler.stats

    async def wait(self, predicate: Callable[[HandlerStats], bool], timeout: float = WAIT) -> None:
        """Wait until the handler's counters satisfy `predicate`."""
        await self.handler.wait_for(predicate, timeout)

    def app(self, username: str = "app-1", **kwargs: Any) -> AppClient:
        """An app client on the broker's app listener as one of its test users."""
        return AppClient(
            self.broker.host,
            self.broker.app_port or 0,
            username,
            self.broker.app_password(username),
            tls_context=self.broker.ssl_context(None),
            topics=self.topics,
            timeout=WAIT,
            **kwargs,
        )

    def car(self, vin: str, **kwargs: Any) -> FakeCar:
        """A hand-made car for `vin` (its own certificate)."""
        return FakeCar(self, vin, **kwargs)

    async def advance_until(self, done: Callable[[], bool], *, step: float, limit: float) -> None:
        """Move the virtual clock forward in `step`s until `done()` (checked after the handler handled what the
        step caused), at most `limit` clock seconds; fail otherwise."""
        moved = 0.0
        while not done():
            if moved >= limit:
                raise AssertionError(f"not done after advancing the clock {moved:g} s")
            await self.clock.advance(step)
            moved += step
            # Let the woken loops reach their next wait (their store calls run in threads).
            for _ in range(20):
                if done():
                    return
                await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def cloud_stack(
    broker: MosquittoBroker,
    registry_url: str,
    *,
    config: HandlerConfig | None = None,
    cloud_config: CloudConfig | None = None,
    topics_prefix: str = "",
) -> AsyncIterator[Stack]:
    """The cloud handler connected to `broker` with the certificate of its client id (`cloud`, `cloud-2`, ...: the
    broker binds a client id to its certificate), the test fleet imported, ready."""
    clock = VirtualClock(START)
    async with open_registry(registry_url, pool_size=4) as registry:
        services = CloudServices(
            registry, clock, SECRET, config=cloud_config, rng=random.Random(7), passwords=PASSWORDS
        )
        await services.vehicles.import_vehicles(FLEET)
        cfg = config or HandlerConfig(session_expiry_s=0, car_workers=2, app_workers=2)
        handler = CloudHandler(
            cfg,
            services,
            clock,
            host=broker.host,
            port=broker.port,
            cloud_key=CLOUD_KEY,
            fleet_keys=fleet_keys(),
            tls_context=broker.ssl_context(cfg.client_id),
            rng=random.Random(3),
        )
        async with handler:
            await handler.wait_ready(WAIT)
            yield Stack(broker, clock, services, handler, Topics(cfg.topic_prefix))


class FakeCar:
    """A car that signs what it is told to and records the commands it receives (verified with the cloud key)."""

    def __init__(
        self, stack: Stack, vin: str, *, key: SigningKey | None = None, issuer: str | None = None, first_seq: int = 1
    ) -> None:
        self.stack = stack
        self.vin = vin
        self.key = key or CAR_KEYS[vin]
        self.signer = Signer(self.key, issuer or vin, stack.clock)
        self.verifier = Verifier(cloud_keys(), audience=vin, clock=stack.clock)
        self.seq = first_seq - 1
        self.topics = stack.topics
        self._client: aiomqtt.Client | None = None
        self._stack = contextlib.AsyncExitStack()
        self.inbox: Inbox | None = None

    async def __aenter__(self) -> FakeCar:
        client = self.stack.broker.client(self.vin)
        await self._stack.enter_async_context(client)
        await client.subscribe(self.topics.commands(self.vin), qos=1)
        self.inbox = await self._stack.enter_async_context(Inbox(client, name=self.vin))
        self._client = client
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def sign(self, typ: MessageType, body: Any, *, seq: int | None = None, aud: str = CLOUD, **kw: Any) -> str:
        """A token as this car signs it (a test may pass another seq or aud)."""
        return self.signer.sign(typ, aud=aud, seq=self.next_seq() if seq is None else seq, body=body, **kw)

    async def publish(self, kind: str, token: str | bytes, *, retain: bool = False) -> None:
        """Publish raw bytes on one of this car's topics (`status`, `events`, `results`, `connection`)."""
        assert self._client is not None
        topic = {
            "status": self.topics.status,
            "events": self.topics.events,
            "results": self.topics.results,
            "connection": self.topics.connection,
        }[kind](self.vin)
        await self._client.publish(topic, token if isinstance(token, bytes) else token.encode(), qos=1, retain=retain)

    async def send_status(self, snapshot: StatusSnapshot | None = None, **kw: Any) -> str:
        token = self.sign(MessageType.STATUS, snapshot or status(at=self.stack.clock.now()), **kw)
        await self.publish("status", token)
        return token

    async def send_event(self, event: Event | Mapping[str, Any], **kw: Any) -> str:
        body = event if isinstance(event, Event) else Event.model_validate(event)
        token = self.sign(MessageType.EVENT, body, **kw)
        await self.publish("events", token)
        return token

    async def send_result(self, command_id: str, state: ResultState, reason: str | None = None, **kw: Any) -> str:
        body = CommandResult.model_validate(
            {"command_id": command_id, "state": state, "reason": reason, "at": self.stack.clock.now()}
        )
        token = self.sign(MessageType.RESULT, body, **kw)
        await self.publish("results", token)
        return token

    def commands(self) -> list[aiomqtt.Message]:
        """Every message received on the car's command topic so far."""
        assert self.inbox is not None
        return self.inbox.received(self.topics.commands(self.vin))

    async def next_command(self, index: int = 0, timeout: float = WAIT) -> tuple[aiomqtt.Message, Verified]:
        """The `index`-th command received (waiting for it), verified with the cloud's JWKS."""
        assert self.inbox is not None
        message = await nth_message(self.inbox, self.topics.commands(self.vin), index, timeout)
        payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
        verified = self.verifier.verify(payload, typ=MessageType.COMMAND, issuer=CLOUD)
        return message, verified


async def nth_message(inbox: Inbox, topic: str, index: int, timeout: float = WAIT) -> aiomqtt.Message:
    """The `index`-th message (from 0) the inbox received on `topic`, waiting for it."""
    changed = inbox._changed  # the inbox's own condition, notified on every message
    async with asyncio.timeout(timeout), changed:
        while len(inbox.received(topic)) <= index:
            await changed.wait()
    return inbox.received(topic)[index]


def verification_code(mails: list[Mail]) -> str:
    """The code of the newest verification mail."""
    for mail in reversed(mails):
        match = re.search(r"verify\?code=([A-Za-z0-9_-]+)", mail.body)
        if match:
            return match.group(1)
    raise AssertionError(f"no verification mail among {[m.subject for m in mails]}")


async def sign_up(app: AppClient, email: str, *, password: str = PASSWORD, spin: str = SPIN) -> None:
    """Register, log in, read the verification mail from the simulated mailbox, verify: all through the app."""
    await app.register(email, password, spin)
    await app.login(email, password)
    await app.verify_email(verification_code(await app.mailbox()))


async def enrol_tkov(stack: Stack, app: AppClient, car: FakeCar, email: str) -> None:
    """Add a two-key car in the app and complete the two-key verification in the car."""
    added = await app.add_vehicle(car.vin)
    assert added.method == "tkov"
    before = stack.stats.applied["events"]
    await car.send_event({"type": "tkov_completed", "at": stack.clock.now(), "email": email})
    await stack.wait(lambda s: s.applied["events"] > before)


async def next_push(app: AppClient, kind: str, match: Callable[[dict[str, Any]], bool] = lambda _: True,
                    timeout: float = WAIT) -> dict[str, Any]:
    """The data of the next push event of `kind` whose data matches (earlier other events are skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            event = await app.next_event(timeout)
            if event.type == kind and match(event.data):
                return event.data


class _FailingTx:
    """A transaction that fails at the first statement on `table`, after everything before it ran."""

    def __init__(self, tx: Any, fault: StoreFault) -> None:
        self._tx = tx
        self._fault = fault

    async def _check(self, sql: str) -> None:
        if self._fault.active and self._fault.table in sql:
            await self._fault.failed()
            raise RegistryUnavailable(f"injected: the store failed at {self._fault.table}")

    async def execute(self, sql: str, *args: Any) -> None:
        await self._check(sql)
        await self._tx.execute(sql, *args)

    async def fetchone(self, sql: str, *args: Any) -> Any:
        await self._check(sql)
        return await self._tx.fetchone(sql, *args)

    async def fetchall(self, sql: str, *args: Any) -> Any:
        await self._check(sql)
        return await self._tx.fetchall(sql, *args)

    async def executemany(self, sql: str, rows: Any) -> None:
        await self._check(sql)
        await self._tx.executemany(sql, rows)


class StoreFault:
    """While active, every registry transaction fails (RegistryUnavailable) at its first statement on `table`
    — after the statements before it ran, so a transaction that is not atomic would leave them behind."""

    def __init__(self, registry: Any, table: str) -> None:
        self.registry = registry
        self.table = table
        self.active = False
        self.failures = 0
        self._changed = asyncio.Condition()
        self._original: Any = None

    def __enter__(self) -> StoreFault:
        db = self.registry._db
        original = self._original = db.transaction
        fault = self

        @contextlib.asynccontextmanager
        async def transaction() -> AsyncIterator[Any]:
            async with original() as tx:
                yield _FailingTx(tx, fault)

        db.transaction = transaction
        self.active = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.heal()
        self.registry._db.transaction = self._original

    def heal(self) -> None:
        """The store works again."""
        self.active = False

    async def failed(self) -> None:
        async with self._changed:
            self.failures += 1
            self._changed.notify_all()

    async def wait_failures(self, count: int, timeout: float = WAIT) -> None:
        """Until the store has failed `count` times."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self.failures >= count)
