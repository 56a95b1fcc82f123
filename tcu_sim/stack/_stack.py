"""`LocalStack`: a whole tcu-sim deployment in one process — broker, cloud, fleet and the fleet file's users.

    async with LocalStack(load_fleet("fleet_configs/demo.yaml"), StackConfig(state_dir=Path(".tcu-sim/demo"))) as s:
        print(s.timings.all_online_s)               # seconds from broker ready to every car online (P5)
        async with s.app_client() as app:            # the demo user's phone app, on the app listener
            await app.login("demo@tcu-sim.test", "...")

Start order, each step waited for with a timeout: provision keys and certificates (kept in the state directory),
the broker (`_broker`), the cloud (`_cloud`), the fleet (`FleetRunner`; every car online — P5 counts from the
broker being ready), the users (`tcu_sim.onboard`). Exit stops fleet, cloud and broker, in that order, and keeps
the state directory for the next run.

Cloud and fleet publish into one event stream, `events` (`tcu_sim.events`). The stack owns one task group: its
own `stack.events` task (reads the stream: every command step into the `CommandLog`, and changes — a car going
offline, the cloud losing the broker, an app request refused — into `StackEvent`s for listeners) and whatever a
caller `spawn`s for the stack's lifetime (the live view). The components own their tasks (`tcu[VIN]...`,
`cloud...`, `mosquitto[port].log`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import structlog

from broker.cloud import PasswordHasher
from broker.handler import CloudHandler
from broker.pki import CLOUD, FleetPKI
from tcu_sim.app import AppClient
from tcu_sim.clock import Clock, SystemClock
from tcu_sim.events import (
    AlertFired,
    AppRequestRefused,
    CarConnection,
    CarControlHandled,
    CloudConnection,
    CommandChanged,
    Event,
    EventStream,
    RoadsideCaseOpened,
    Source,
    Subscription,
)
from tcu_sim.faults import BrokerControl, FleetFaults, ProxyMode
from tcu_sim.fleet import (
    CarSpec,
    Endpoints,
    FleetConfig,
    FleetError,
    FleetRunner,
    StateBusy,
    StateDir,
    StateLock,
    expand_fleet,
    provision,
    raise_open_files_limit,
    remove_endpoints,
    write_endpoints,
)
from tcu_sim.onboard import EnrolmentOutcome, OnboardingError, UserCar, set_up_users
from tcu_sim.protocol import AuxState, CommandState, Topics
from tcu_sim.stack._broker import BrokerInfo, open_broker
from tcu_sim.stack._cloud import stack_cloud
from tcu_sim.stack._config import StackConfig
from tcu_sim.stack._errors import EnrolmentError, FleetStartError, StackBusy, StackError
from tcu_sim.stack._files import load_app_logins, write_app_session
from tcu_sim.stack._trace import CommandLog
from tcu_sim.transport import TcuSession

__all__ = [
    "STACK_APP",
    "TERMINAL_APP",
    "TERMINAL_APPS",
    "CarRow",
    "LocalStack",
    "StackEvent",
    "StackSnapshot",
    "StackTimings",
]

log = structlog.get_logger("tcu_sim.stack")

#: App logins on the app listener of a broker the stack starts: its own (setting up users), and the one the
#: second terminal's `tcu-sim app` uses (through `<state>/app-session.json`).
STACK_APP = "tcu-sim-up"
TERMINAL_APP = "demo-app"
#: The terminal's app logins: `tcu-sim app` leases a free one per process (the app listener makes the client id
#: the username, so two processes on one login would push each other off); all in the session file's `pool`.
TERMINAL_APPS = (TERMINAL_APP, *(f"{TERMINAL_APP}-{n}" for n in range(2, 9)))

_HELD_RECHECK_S = 0.25  # real seconds between looks at whether a car not yet online is held offline by a fault


@dataclass(slots=True)
class StackTimings:
    """How long the start took, in real seconds."""

    provision_s: float = 0.0
    broker_s: float = 0.0
    """From the start of `__aenter__` to the broker accepting connections."""
    all_online_s: float | None = None
    """From the broker accepting connections to every car online (SPEC P5: at most 5 s for the demo)."""
    users_s: float = 0.0
    total_s: float = 0.0
    held_offline: tuple[str, ...] = ()
    """Cars a connectivity fault of their profile held offline at the start (not waited for)."""


@dataclass(frozen=True, slots=True)
class StackEvent:
    """Something that changed while the stack runs, as one line for a log or the live view."""

    at: float
    """Wall-clock time (Unix seconds)."""
    text: str


@dataclass(frozen=True, slots=True)
class CarRow:
    """One car as the live view shows it."""

    vin: str
    model: str
    group: str
    users: str
    online: bool
    locked: bool
    heater: str
    position: str
    last_command: str
    faults: str
    doors: tuple[str, ...] = ()
    """The open doors (and trunk, hood), by name."""
    windows: tuple[str, ...] = ()
    """The open windows, by name."""


@dataclass(frozen=True, slots=True)
class StackSnapshot:
    """Everything the live view shows, read at one moment (plain data: rendering it needs no stack)."""

    fleet: str
    broker: str
    broker_url: str
    app_url: str | None
    cloud: str
    cars: tuple[CarRow, ...]
    online: int
    all_online_s: float | None
    commands: tuple[str, ...]
    command_counts: dict[str, int] = field(default_factory=dict)
    uptime_s: float = 0.0
    time_scale: float = 1.0


class LocalStack:
    """Broker, cloud, fleet and users of one fleet file, started and stopped together (module docstring)."""

    def __init__(
        self,
        fleet: FleetConfig,
        config: StackConfig,
        *,
        clock: Clock | None = None,
        passwords: PasswordHasher | None = None,
        lock: StateLock | None = None,
    ) -> None:
        self.fleet_config = fleet
        self.config = config
        self.clock: Clock = clock or SystemClock(scale=config.time_scale)
        self.state = StateDir(config.state_dir)
        self.topics = Topics(fleet.topic_prefix)
        self.cars: list[CarSpec] = expand_fleet(fleet)
        self.commands = CommandLog()
        self.timings = StackTimings()
        self.users: list[UserCar] = []
        #: What cloud and fleet do, as typed events: subscribe here (`events.subscribe(...)`).
        self.events = EventStream("stack")
        #: The recent `StackEvent` lines (the live view's log).
        self.recent: list[StackEvent] = []
        self._passwords = passwords
        #: The state directory's lock (SPEC §7: one running stack per directory); taken at start unless the
        #: caller holds it already (`tcu-sim up` takes it before it opens its log there).
        self.lock = lock if lock is not None else StateLock(config.state_dir, holder="up")
        self._broker: BrokerInfo | None = None
        self._cloud: CloudHandler | None = None
        self._runner: FleetRunner | None = None
        self._pki: FleetPKI | None = None
        self._exit = contextlib.AsyncExitStack()
        self._group: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._listeners: list[Callable[[StackEvent], None]] = []
        self._change_listeners: list[Callable[[], None]] = []
        #: Each car's connection as the fleet last reported it (a command delivered to an offline car is queued).
        self._car_online: dict[str, bool] = {}
        self._emails: dict[str, str] = {}
        self._started_at = 0.0
        self._running = False

    def __repr__(self) -> str:
        if not self._running:
            return f"LocalStack({self.fleet_config.name!r}, stopped, state={str(self.config.state_dir)!r})"
        runner = self.fleet
        return (
            f"LocalStack({self.fleet_config.name!r}, {self.broker.kind.value} {self.broker.device}, "
            f"online={runner.online_count}/{len(self.cars)}, commands={len(self.commands.recent(10**6))})"
        )

    # -- the parts (after start) ---------------------------------------------------------------------------
    @property
    def broker(self) -> BrokerInfo:
        """The broker in use."""
        if self._broker is None:
            raise StackError("the stack is not running")
        return self._broker

    @property
    def cloud(self) -> CloudHandler:
        """The cloud handler (its `services`, `registry` and `stats`)."""
        if self._cloud is None:
            raise StackError("the stack is not running")
        return self._cloud

    @property
    def fleet(self) -> FleetRunner:
        """The fleet runner (`sessions[vin].vehicle` is each car's state)."""
        if self._runner is None:
            raise StackError("the stack is not running")
        return self._runner

    @property
    def pki(self) -> FleetPKI:
        """The fleet PKI of the state directory."""
        if self._pki is None:
            self._pki = FleetPKI(self.state.pki_dir)
        return self._pki

    @property
    def app_session_path(self) -> Path:
        """The session file for `tcu-sim app --session ...` in a second terminal."""
        return self.state.root / "app-session.json"

    def app_client(self, username: str = TERMINAL_APP, **kwargs: Any) -> AppClient:
        """An unconnected `AppClient` on the app listener with one of the stack's app logins."""
        endpoint = self.broker.app(username)
        if endpoint is None:
            raise StackError("no app login on this broker (give the app listener's URL with its login)")
        tls = self.pki.client_ssl_context(None) if endpoint.tls else None
        return AppClient(
            endpoint.host, endpoint.port, endpoint.username, endpoint.password, tls, topics=self.topics, **kwargs
        )

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        self._started_at = time.monotonic()
        try:
            await self._start()
        except BaseException:
            await self._exit.aclose()
            raise
        self._running = True
        self.timings.total_s = time.monotonic() - self._started_at
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._running = False
        log.info("stack.stopping")
        await self._exit.aclose()  # tasks, fleet, cloud, broker: the reverse of the start
        log.info("stack.stopped", state=str(self.state.root))

    async def _start(self) -> None:
        cfg = self.config
        t0 = self._started_at
        if not self.lock.held:
            # Before anything is written: a second stack on this directory changes nothing of the first.
            try:
                self._exit.enter_context(self.lock)
            except StateBusy as exc:
                raise StackBusy(str(exc)) from None
        try:
            # Keys and certificates, and the password hasher (its constructor hashes once: a blocking ~0.1-0.5 s),
            # in threads while nothing else runs yet.
            _, passwords = await asyncio.gather(
                asyncio.to_thread(provision, self.fleet_config, self.state, clock=SystemClock(), pki=True),
                asyncio.to_thread(lambda: self._passwords or PasswordHasher()),
            )
        except FleetError as exc:
            raise StackError(str(exc)) from None
        self.timings.provision_s = time.monotonic() - t0
        raise_open_files_limit(len(self.cars) + 1024)  # each car holds a socket
        logins = load_app_logins(self.state.root / "app-logins.json", [STACK_APP, *TERMINAL_APPS])

        broker = await self._exit.enter_async_context(
            open_broker(cfg, self.pki, logins, topic_prefix=self.fleet_config.topic_prefix)
        )
        self._broker = broker
        self._record_endpoints(broker)
        self.timings.broker_s = broker.ready_at - t0
        log.info("stack.broker_ready", broker=broker.description, url=str(broker.device))

        # The cloud before the fleet: it subscribes while the cars connect, and sees them arrive. (Cars first would
        # hand the cloud every retained status at once when it subscribes, which the embedded broker chokes on.)
        # Subscribed before anything runs, read once the stack is up: no command step is missed.
        watched = self.events.subscribe(
            CommandChanged, CarConnection, CloudConnection, AppRequestRefused, CarControlHandled, AlertFired,
            RoadsideCaseOpened, name="stack.events",
        )
        self._exit.callback(watched.close)
        cloud = await self._exit.enter_async_context(
            stack_cloud(
                self.state, self.clock, registry_url=cfg.registry_url, host=broker.device.host,
                port=broker.device.port, tls_context=self.pki.client_ssl_context(CLOUD) if broker.device.tls else None,
                mqtt5=broker.mqtt5, topic_prefix=self.fleet_config.topic_prefix, cloud=cfg.cloud_config,
                events=self.events, passwords=passwords,
            )
        )
        self._cloud = cloud

        if broker.process is not None:
            # `tcu-sim fault broker stop|kill|restart --state DIR` (and the dashboard) break the broker through it.
            await self._exit.enter_async_context(
                BrokerControl(broker.process, self.state.root / "broker.sock", events=self.events)
            )
        # The cars' connectivity profiles and live `tcu-sim fault` controls; with the fault proxy, fleet transport
        # faults (latency, black hole, ...) on each group's route; broker faults on the broker this stack started.
        faults = FleetFaults(
            proxy=ProxyMode.GROUP if cfg.fault_proxy else ProxyMode.NONE, broker=broker.process,
            seed=self.fleet_config.seed,
        )
        runner = FleetRunner(
            self.cars, state=self.state, broker=broker.device, clock=self.clock,
            topic_prefix=self.fleet_config.topic_prefix, events=self.events, faults=faults,
        )
        await self._exit.enter_async_context(runner)  # entered last, so stopped first: fleet, cloud, broker
        self._runner = runner
        await self._wait_fleet_online(runner, broker)
        try:
            await cloud.wait_ready(cfg.start_timeout_s)
        except TimeoutError:
            raise StackError(f"{broker.device}: the cloud is not connected ({cloud.link.last_error})") from None

        t_users = time.monotonic()
        stack_app = broker.app(STACK_APP)
        if cfg.enrol_users and stack_app is not None:
            try:
                self.users = await set_up_users(
                    self.fleet_config, self.cars, runner.sessions, lambda: self.app_client(STACK_APP),
                    timeout=cfg.start_timeout_s,
                )
            except OnboardingError as exc:
                raise EnrolmentError(str(exc)) from None
        self.timings.users_s = time.monotonic() - t_users
        terminal = broker.app(TERMINAL_APP)
        if terminal is not None:
            pool = {e.username: e.password for name in TERMINAL_APPS if (e := broker.app(name)) is not None}
            write_app_session(
                self.app_session_path, broker=terminal.url, username=terminal.username, mqtt_password=terminal.password,
                pool=pool if len(pool) > 1 else None,  # an external broker's one login is no pool
            )

        group = asyncio.TaskGroup()
        await self._exit.enter_async_context(_cancelling(group, self._tasks))
        self._group = group
        self.spawn(self._follow(watched), name="stack.events")

    def _record_endpoints(self, broker: BrokerInfo) -> None:
        """`<state>/endpoints.json`: where `tcu-sim car`, `fault` and `app --state` find this stack's broker
        (removed when the stack stops; a killed stack's file names a pid that is gone)."""
        app = broker.app(TERMINAL_APP)
        pid = os.getpid()
        write_endpoints(self.state.root, Endpoints(
            pid=pid, holder=self.lock.holder, device=str(broker.device), app=app.url if app is not None else None,
            device_port=broker.device.port, app_port=app.port if app is not None else None,
        ))
        self._exit.callback(remove_endpoints, self.state.root, pid)

    async def _wait_fleet_online(self, runner: FleetRunner, broker: BrokerInfo) -> None:
        """Wait until every car has come online once — except the cars a connectivity fault of their profile holds
        offline (a flaky or no-signal car may never be online at the start). Sets `timings.all_online_s`."""
        held: list[str] = []

        async def came_online(session: TcuSession) -> None:
            # A car that connected and dropped before we looked counts (its connects say so); one that connects
            # while we wait sets the event we wait on, whatever happens right after.
            while session.stats.connects == 0:
                if _held_offline(runner, session):
                    held.append(session.vin)
                    return
                with contextlib.suppress(TimeoutError):
                    await session.wait_online(_HELD_RECHECK_S)

        sessions = list(runner.sessions.values())
        try:
            async with asyncio.timeout(self.config.online_timeout_s):
                await asyncio.gather(*(came_online(s) for s in sessions))
        except TimeoutError:
            never = [s.vin for s in sessions if s.stats.connects == 0 and s.vin not in held]
            raise FleetStartError(
                f"{broker.device}: {len(never)} of {len(sessions)} cars not online after "
                f"{self.config.online_timeout_s:g} s (is the broker reachable, does it accept the fleet's "
                f"certificates?), e.g. {', '.join(never[:3])}"
            ) from None
        self.timings.all_online_s = time.monotonic() - broker.ready_at
        self.timings.held_offline = tuple(sorted(held))
        log.info("stack.fleet_online", cars=len(sessions) - len(held), held_offline=len(held),
                 after_s=round(self.timings.all_online_s, 3))

    def spawn(self, coro: Coroutine[Any, Any, None], *, name: str) -> asyncio.Task[None]:
        """Run `coro` as a named task for as long as the stack runs (cancelled when it stops)."""
        if self._group is None:
            coro.close()
            raise StackError("the stack is not running")
        task = self._group.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- what happens while it runs ---------------------------------------------------------------------------
    def subscribe(self, listener: Callable[[StackEvent], None]) -> Callable[[], None]:
        """Call `listener(event)` for every `StackEvent`; returns the function that unsubscribes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def on_change(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call `listener()` after every event the stack reads (a command step, a car online or offline, an
        operator's action, ...): the live view redraws then, not on a timer. Returns the unsubscribe function."""
        self._change_listeners.append(listener)
        return lambda: self._change_listeners.remove(listener)

    def _emit(self, text: str) -> None:
        event = StackEvent(time.time(), text)
        self.recent.append(event)
        del self.recent[:-200]
        log.info("stack.event", text=text)
        for listener in list(self._listeners):
            listener(event)

    async def _follow(self, watched: Subscription[Event]) -> None:
        """Read the event stream: command steps into the `CommandLog`; a car going offline or coming back (as the
        car saw it), the cloud losing or regaining the broker, an app request refused, an operator's action a car
        refused, a speed or area alert that fired, a roadside case opened, as `StackEvent`s."""
        online = self._car_online
        online.update({vin: s.online for vin, s in self.fleet.sessions.items()})
        cloud_up = self.cloud.link.connected
        async for event in watched:
            try:
                if isinstance(event, CommandChanged):
                    await self._command_step(event)
                elif isinstance(event, CarConnection) and event.source is Source.FLEET:
                    if online.get(event.vin) != event.online:
                        online[event.vin] = event.online
                        why = "" if event.online else f" ({event.reason or 'no signal'})"
                        self._emit(f"car {event.vin} {'online' if event.online else 'offline'}{why}")
                elif isinstance(event, CloudConnection) and event.connected != cloud_up:
                    cloud_up = event.connected
                    self._emit("cloud connected" if cloud_up else f"cloud lost the broker ({event.error})")
                elif isinstance(event, AppRequestRefused):
                    # An app request the cloud refused (a wrong S-PIN, a car of somebody else's): no command.
                    self._emit(f"cloud refused 1 app request: {event.code}")
                elif isinstance(event, CarControlHandled) and not event.ok:
                    # An operator's action (`tcu-sim car`, `tcu-sim fault`) the car refused: the reason, here too.
                    self._emit(f"car {event.vin} refused {event.action}: {event.error}")
                elif isinstance(event, AlertFired):
                    to = await self._email(event.user_id)
                    self._emit(f"car {event.vin} {event.alert} alert: {event.detail} -> {to}")
                elif isinstance(event, RoadsideCaseOpened):
                    opened = f"case {event.case_id}" if event.case_id else "refused (services not active)"
                    self._emit(f"car {event.vin} breakdown call: roadside assistance {opened}")
            except Exception:  # the view must never stop following
                log.exception("stack.event_failed", event=type(event).__name__)
            for listener in list(self._change_listeners):
                listener()

    async def _command_step(self, event: CommandChanged) -> None:
        if event.state == CommandState.QUEUED.value:
            return  # a trace starts queued: its steps are what came after
        await self.commands.record(
            command_id=event.command_id, vin=event.vin, op=event.op, user=await self._email(event.user_id),
            state=CommandState(event.state), created_at=event.created_at, at=event.at, reason=event.reason,
            car_online=self._car_online.get(event.vin, True),
        )

    async def _email(self, user_id: str) -> str:
        email = self._emails.get(user_id)
        if email is None:
            user = await self.cloud.registry.get_user(user_id)
            email = user.email if user is not None else user_id
            self._emails[user_id] = email
        return email

    # -- the live view's data ---------------------------------------------------------------------------------
    def snapshot(self, *, commands: int = 8) -> StackSnapshot:
        """What the live view shows, now."""
        runner, cloud, broker = self.fleet, self.cloud, self.broker
        by_vin: dict[str, list[str]] = {}
        for car in self.users:
            if car.outcome is not EnrolmentOutcome.SKIPPED:
                by_vin.setdefault(car.vin, []).append(f"{car.email.split('@')[0]} ({car.role.value[0].upper()})")
        now = self.clock.now()
        rows = []
        for spec in self.cars:
            session = runner.sessions[spec.vin]
            vehicle = session.vehicle
            last = self.commands.last_for(spec.vin)
            rows.append(
                CarRow(
                    vin=spec.vin,
                    model=f"{spec.model.value}/{spec.equipment.value}",
                    group=spec.group,
                    users=", ".join(by_vin.get(spec.vin, [])),
                    online=session.online,
                    locked=vehicle.locked,
                    heater=_heater(vehicle.aux_state, vehicle.aux_remaining_s(now)),
                    position="driving" if vehicle.moving else f"{vehicle.position[0]:.5f}, {vehicle.position[1]:.5f}",
                    last_command=_last(last.op, last.state.value, last.reason) if last else "",
                    faults=_faults(runner, session),
                    doors=tuple(d.value for d in vehicle.open_doors),
                    windows=tuple(w.value for w in vehicle.open_windows),
                )
            )
        counts: dict[str, int] = {}
        for trace in self.commands.recent(10**6):
            counts[trace.state.value] = counts.get(trace.state.value, 0) + 1
        app = broker.app(TERMINAL_APP)
        cloud_state = "connected" if cloud.link.connected else f"disconnected ({cloud.link.last_error or '…'})"
        stats = cloud.stats
        return StackSnapshot(
            fleet=self.fleet_config.name,
            broker=broker.description,
            broker_url=str(broker.device),
            app_url=app.url if app is not None else None,
            cloud=f"{cloud_state}; {sum(stats.applied.values())} car messages applied, {_refused(stats.refused)}, "
                  f"{sum(stats.requests.values())} app requests",
            cars=tuple(rows),
            online=runner.online_count,
            all_online_s=self.timings.all_online_s,
            commands=tuple(t.line() for t in self.commands.recent(commands)),
            command_counts=counts,
            uptime_s=time.monotonic() - self._started_at,
            time_scale=self.config.time_scale,
        )


def _refused(refused: Mapping[str, int]) -> str:
    if not refused:
        return "none refused"
    # `duplicate` is normal after a restart: the broker hands the cloud the retained status it saw before.
    return f"{sum(refused.values())} refused ({', '.join(f'{n} {why}' for why, n in sorted(refused.items()))})"


def _heater(state: AuxState, remaining_s: float) -> str:
    if state is AuxState.OFF:
        return "off"
    return f"{state.value} {remaining_s / 60:.0f} min"


def _last(op: str, state: str, reason: str | None) -> str:
    return f"{op} {state}" + (f" ({reason})" if reason else "")


def _car_faults(runner: FleetRunner, vin: str) -> Any:
    """The fault layer's state of car `vin` (None without one). The fault layer (tcu_sim.faults) is read
    defensively: the view shows what it exposes, and a runner without it is fine."""
    faults = getattr(runner, "faults", None)
    cars = getattr(faults, "cars", None)
    return cars.get(vin) if isinstance(cars, Mapping) else None


def _held_offline(runner: FleetRunner, session: TcuSession) -> bool:
    car = _car_faults(runner, session.vin)
    return bool(getattr(car, "offline", False))


def _faults(runner: FleetRunner, session: TcuSession) -> str:
    """What is wrong with a car's connection or commands, in a few words."""
    out: list[str] = []
    car = _car_faults(runner, session.vin)
    if car is not None:
        now = runner.clock.monotonic()
        holds = getattr(car, "holds", {})
        held = sorted(reason for reason, until in holds.items() if until > now) if isinstance(holds, Mapping) else []
        out += [f"held offline: {', '.join(held)}"] if held else []
        zone = getattr(car, "zone", None)
        if zone is not None:
            out.append(f"in {getattr(zone, 'name', 'a zone')}")
        out += [str(loop) for loop in getattr(car, "loops", ())]
        skew = getattr(car, "skew_s", 0.0)
        if isinstance(skew, int | float) and skew:
            out.append(f"clock {skew:+g} s")
    if not session.online and not out:
        out.append(session.stats.last_disconnect_reason or "offline")
    if session.signal_pct < 50:
        out.append(f"signal {session.signal_pct}%")
    if session.stats.commands_rejected:
        out.append(f"{session.stats.commands_rejected} rejected")
    if len(session.outbox):
        out.append(f"outbox {len(session.outbox)}")
    return ", ".join(out)


@contextlib.asynccontextmanager
async def _cancelling(group: asyncio.TaskGroup, tasks: set[asyncio.Task[None]]) -> AsyncIterator[None]:
    """Enter `group`; on exit cancel its `tasks` (they run for the stack's lifetime) and wait for them."""
    await group.__aenter__()
    try:
        yield
    finally:
        for task in list(tasks):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await group.__aexit__(None, None, None)
