"""`SimCloud`: the real cloud (MQTT handler, domain services, SQLite registry) on a sandbox's broker and clock.

It is the cloud `tcu-sim cloud run` runs, built by the same `broker.runtime`, with what a test wants changed:
a throw-away registry and server secret, cheap password hashing, a clean MQTT session, and the sandbox's
`SimClock`, whose `advance()` lets the cloud expire overdue commands before it returns. It publishes into the
sandbox's `EventStream` (`events`).

The handle adds await-style helpers whose failures say what happened: `wait_for_command` quotes the command's
history (every state with its time) and the car's last status. The waiters learn that a command moved from the
event stream (`CommandChanged`), like any other reader, and then read the registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

from broker.cloud import PasswordHasher, ServerSecret
from broker.handler import HandlerConfig
from broker.runtime import BrokerLogin, CloudKeys, cloud_handler, open_services
from tcu_sim._aio import cancel_and_wait
from tcu_sim.events import CommandChanged, EventStream, Subscription
from tcu_sim.protocol import CommandState, KeySet, PublicKey, SigningKey

from ._brokers import BrokerKind
from ._describe import at, describe_history, describe_status
from ._errors import CommandFailed, HarnessSetupError, WaitTimeout

if TYPE_CHECKING:
    from broker.cloud import CloudConfig, CloudServices
    from broker.handler import CloudHandler, HandlerStats
    from broker.registry import CommandRecord, CommandStep, MailRecord, Registry, VehicleRecord, VehicleState
    from tcu_sim.fleet import StateDir

    from ._brokers import SimBroker
    from ._clock import SimClock

__all__ = ["SimCloud"]

T = TypeVar("T")
_RECHECK_S = 0.25  # a wait re-reads the registry at least this often, whatever woke it (or nothing did)
CLOUD_KID = "cloud-1"


class SimCloud:
    """The cloud of a sandbox (an async context manager). See the module docstring.

    `services` are the domain services (`accounts`, `garage`, `commands`, ...), `registry` the store,
    `handler` the MQTT handler, `stats` its counters, `events` the `EventStream` the cloud publishes into
    (the sandbox's, shared with its fleets; a stream of its own when none is given). `registry_url` defaults to
    a SQLite file in `directory` (a `postgresql://` URL works too). `describe_car(vin)` is set by the sandbox so
    failure messages can quote the car's own view of itself.
    """

    def __init__(
        self,
        broker: SimBroker,
        clock: SimClock,
        directory: Path,
        *,
        rng: random.Random,
        topic_prefix: str = "",
        client_id: str | None = None,
        config: CloudConfig | None = None,
        handler_config: HandlerConfig | None = None,
        registry_url: str | None = None,
        ready_timeout: float = 10.0,
        events: EventStream | None = None,
    ) -> None:
        self.broker = broker
        #: What the cloud does, as typed events (SPEC §8): subscribe here.
        self.events = events if events is not None else EventStream("sim-cloud")
        self.registry_url = registry_url or f"sqlite://{Path(directory) / 'registry.db'}"
        self.clock = clock
        self.directory = Path(directory)
        self.rng = rng
        self.topic_prefix = topic_prefix
        # The broker forces the client id to the certificate's CN (SPEC §7): the cloud's identity is its client id.
        # None: a cloud identity no other cloud of this process holds on the broker (`SimBroker.lease_cloud`).
        self.client_id = client_id or "cloud"
        self._fixed_identity = client_id is not None
        self._config = config
        self._handler_config = handler_config
        self.ready_timeout = ready_timeout
        self.cloud_key = SigningKey.generate(CLOUD_KID)
        self.fleet_keys = KeySet()
        self.describe_car: Callable[[str], str] | None = None
        self._stack = contextlib.AsyncExitStack()
        self._handler: CloudHandler | None = None
        self._services: CloudServices | None = None
        self._changed = asyncio.Condition()
        self._progress_seen = 0
        self._watcher: asyncio.Task[None] | None = None

    # --- lifecycle
    async def __aenter__(self) -> Self:
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            # Subscribed before the handler exists: the waiters see every step, the first `queued` included.
            steps = self._stack.enter_context(self.events.subscribe(CommandChanged, name="sim-cloud.waiters"))
            if not self._fixed_identity:
                self.client_id = self._stack.enter_context(self.broker.lease_cloud())
            self._watcher = asyncio.create_task(self._wake_waiters(steps), name=f"sim-cloud[{self.client_id}].waiters")
            self._stack.push_async_callback(self._stop_watcher)
            secret = ServerSecret(self.rng.randbytes(32))  # throw-away: nothing outlives the test
            services = await self._stack.enter_async_context(
                open_services(
                    self.registry_url,
                    clock=self.clock,
                    secret=secret,
                    config=self._config,
                    passwords=PasswordHasher.for_tests(),
                    rng=random.Random(self.rng.getrandbits(64)),
                    pool_size=4,
                )
            )
            username, password = getattr(self.broker, "credentials", (None, None))
            tls = self.broker.device_tls(self.client_id)
            login = BrokerLogin(self.broker.host, self.broker.port, tls, username=username, password=password)
            handler = cloud_handler(
                services,
                self._handler_settings(),
                login,
                keys=CloudKeys(self.cloud_key, self.fleet_keys, secret),
                events=self.events,
                rng=random.Random(self.rng.getrandbits(64)),
            )
            await self._stack.enter_async_context(handler)
            self._handler, self._services = handler, services
            try:
                await handler.wait_ready(self.ready_timeout)
            except TimeoutError:
                raise HarnessSetupError(
                    f"the cloud could not connect to {self.broker.url} within {self.ready_timeout:g} s "
                    f"({handler.link.last_error})\n{self.broker.log_tail()}"
                ) from None
            self._stack.callback(self.clock.after_advance(self._after_advance))
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    def _handler_settings(self) -> HandlerConfig:
        """The handler's configuration: the given one (or a test's defaults) on this sandbox's broker."""
        base = self._handler_config or HandlerConfig(
            # A clean session, and quick reconnects after a broker restart (real seconds, not clock ones).
            session_expiry_s=0, car_workers=2, app_workers=2, reconnect_base_s=0.05, reconnect_cap_s=1.0
        )
        update: dict[str, Any] = {
            "topic_prefix": self.topic_prefix,
            "client_id": self.client_id,
            "protocol": self.broker.mqtt_version,
            "shared_subscriptions": base.shared_subscriptions and self.broker.mqtt_version == "5",
        }
        if self.broker.kind is BrokerKind.EMBEDDED:
            # amqtt delivers retained QoS 1 messages during a SUBSCRIBE and waits for their PUBACK before
            # it sends the SUBACK; a cloud that acknowledges only what it applied (after subscribing) would
            # wait forever when it (re)connects after the cars (reported to the lead; Mosquitto is fine).
            update["ack_after_apply"] = False
        return base.model_copy(update=update)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._handler = None
        await self._stack.aclose()

    async def _wake_waiters(self, steps: Subscription[CommandChanged]) -> None:
        """Wake the waiters on every command step the cloud reports (creation and expiry included); ends when
        the subscription is closed."""
        async for _ in steps:
            steps.drain()  # a burst of steps wakes them once: they read the registry, not the events
            await self._notify()

    async def _stop_watcher(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            await cancel_and_wait([watcher], timeout=5.0)

    async def _notify(self) -> None:
        async with self._changed:
            self._progress_seen += 1
            self._changed.notify_all()

    async def _after_advance(self) -> None:
        if self._handler is not None:
            await self._handler.expire_now()

    # --- parts
    @property
    def handler(self) -> CloudHandler:
        """The MQTT handler (running)."""
        if self._handler is None:
            raise HarnessSetupError("the cloud is not running")
        return self._handler

    @property
    def services(self) -> CloudServices:
        """The domain services (accounts, garage, commands, licences, ...)."""
        if self._services is None:
            raise HarnessSetupError("the cloud is not running")
        return self._services

    @property
    def registry(self) -> Registry:
        """The cloud's registry."""
        return self.services.registry

    @property
    def stats(self) -> HandlerStats:
        """The handler's counters (received, applied, refused by reason, requests, errors, ...)."""
        return self.handler.stats

    def __repr__(self) -> str:
        state = "running" if self._handler is not None else "stopped"
        return f"SimCloud({state}, broker={self.broker.url}, prefix={self.topic_prefix!r}, cars={len(self.fleet_keys)})"

    # --- down and back
    async def stop(self) -> None:
        """Take the cloud down like a crashed or redeployed cloud process: its MQTT handler stops and leaves the
        broker, while the registry (the database) stays. With a kept session (`HandlerConfig.session_expiry_s`
        > 0) the broker holds what cars and apps send meanwhile; `start()` brings it back."""
        await self.handler.__aexit__(None, None, None)

    async def start(self) -> None:
        """Start a stopped cloud again, with the same identity, keys and registry; returns once it is subscribed."""
        await self.handler.__aenter__()
        try:
            await self.handler.wait_ready(self.ready_timeout)
        except TimeoutError:
            raise HarnessSetupError(
                f"the cloud did not come back on {self.broker.url} within {self.ready_timeout:g} s "
                f"({self.handler.link.last_error})\n{self.broker.log_tail()}"
            ) from None

    # --- the fleet
    def install_key(self, state: StateDir) -> None:
        """Put the cloud's signing key into a state directory, so provisioning it pins this cloud's key."""
        path = state.cloud_key_path
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as file:
                file.write(self.cloud_key.private_pem())

    async def add_cars(self, records: list[VehicleRecord], keys: KeySet) -> None:
        """Import cars into the registry (factory data, free licence year) and trust their signing keys."""
        await self.services.vehicles.import_vehicles(records)
        for jwk in keys.to_jwks()["keys"]:
            self.fleet_keys.add(PublicKey.from_jwk(jwk))

    # --- reading
    async def command(self, command_id: str) -> CommandRecord | None:
        """The command as the registry holds it now."""
        return await self.registry.get_command(command_id)

    async def command_history(self, command_id: str) -> list[CommandStep]:
        """Every state the command went through, oldest first."""
        return await self.registry.command_history(command_id)

    async def vehicle_state(self, vin: str) -> VehicleState | None:
        """What the cloud last heard from a car: its verified status and whether it is online."""
        return await self.registry.get_vehicle_state(vin)

    async def mailbox(self, email: str) -> list[MailRecord]:
        """The simulated e-mails sent to `email`."""
        return await self.registry.list_mail(email)

    async def expire_now(self) -> int:
        """Expire overdue commands now (what the cloud does on every clock tick); how many."""
        return await self.handler.expire_now()

    # --- waiting
    async def wait_until(
        self, check: Callable[[], Awaitable[T | None]], *, timeout: float, what: Callable[[], Awaitable[str]]
    ) -> T:
        """Await `check()` until it returns something other than None, re-checking after each message the
        cloud handled and each command change; `WaitTimeout` with `await what()` as its message otherwise."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        handler = self.handler
        while True:
            seen = self._progress_seen  # before reading: a step during `check()` wakes the next wait at once
            found = await check()
            if found is not None:
                return found
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise WaitTimeout(await what())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, _RECHECK_S)):
                    await _first(self._wait_progress(seen), _next_handled(handler, remaining))

    async def _wait_progress(self, seen: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self._progress_seen != seen)

    async def wait_for_command(
        self, command_id: str, state: CommandState | str | None = None, *, timeout: float = 10.0
    ) -> CommandRecord:
        """Wait until the command is in `state` (None: any final state) and return it.

        A command that reaches a *different* final state fails at once (`CommandFailed`: final states never
        change); one that gets nowhere fails after `timeout` seconds (`WaitTimeout`). Both messages quote the
        command's history and the car's last status.
        """
        wanted = CommandState(state) if state is not None else None

        async def check() -> CommandRecord | None:
            record = await self.command(command_id)
            if record is None:
                return None
            if wanted is None:
                return record if record.state.is_final else None
            if record.state is wanted:
                return record
            history = await self.command_history(command_id)
            if wanted in {step.state for step in history}:
                return record  # passed through the wanted state already
            if record.state.is_final:
                problem = f"expected {wanted.value}, but it ended {record.state.value}"
                raise CommandFailed(await self.explain_command(command_id, problem))
            return None

        async def what() -> str:
            goal = wanted.value if wanted is not None else "a final state"
            return await self.explain_command(command_id, f"not {goal} within {timeout:g} s")

        return await self.wait_until(check, timeout=timeout, what=what)

    async def explain_command(self, command_id: str, problem: str) -> str:
        """A multi-line account of a command for a failure message: the problem, the history, the car."""
        record = await self.command(command_id)
        if record is None:
            return f"command {command_id}: {problem}; the cloud has no such command"
        history = await self.command_history(command_id)
        lines = [
            f"command {command_id} ({record.op} on {record.vin}): {problem}",
            f"  history: {describe_history(history, record.created_at)}",
            f"  created {at(record.created_at)}, expires {at(record.expires_at)}, clock now {at(self.clock.now())}",
        ]
        lines.extend(await self.explain_car(record.vin))
        return "\n".join(lines)

    async def explain_car(self, vin: str) -> list[str]:
        """Lines about a car: its own last status (when it runs in this sandbox) and the cloud's view."""
        lines = []
        if self.describe_car is not None:
            lines.append(f"  car {vin} itself: {self.describe_car(vin)}")
        state = await self.vehicle_state(vin)
        if state is None:
            lines.append(f"  cloud: car {vin} is unknown")
        else:
            online = {True: "online", False: "offline", None: "never connected"}[state.online]
            lines.append(f"  cloud's last status of {vin} ({online}): {describe_status(state.status)}")
        return lines


def _handled(stats: HandlerStats) -> int:
    """A number that grows with every car message or app request the handler finished."""
    return sum(stats.received.values()) + sum(stats.requests.values()) + stats.requests_unanswerable


async def _next_handled(handler: CloudHandler, timeout: float) -> None:
    """Return once the handler has finished another car message or app request."""
    before = _handled(handler.stats)
    await handler.wait_for(lambda stats: _handled(stats) != before, timeout)


async def _first(*aws: Awaitable[Any]) -> None:
    """Wait until the first of `aws` finishes; cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
