"""Faults on a running fleet: the cars' connectivity (offline, flaky, weak signal, no-signal zones, restarts),
their clocks, their transport (routes of a fault proxy), the broker the run started, and the fleet file's
timeline.

`FleetFaults` attaches to a `FleetRunner` before any car connects (the runner does it):

    faults = FleetFaults.from_config(config, proxy=ProxyMode.CAR)
    async with FleetRunner(cars, ..., faults=faults) as fleet:
        await faults.car(vin).apply(OfflineFault(duration_s=30))

It is the runner's `tcu_sim.fleet.FleetHook`: the runner gives every session its `fault_handler` (so `fault`
controls on `sim/{vin}/control` reach it), and on attach it applies each group's connectivity profile, watches
the cars' positions against the no-signal zones, and — with a proxy mode — gives every car (or group) its own
route through a `FaultProxy` or a Toxiproxy server.

Going offline is a *hold* with a reason (`operator`, `zone`, `flaky`, `weak_signal`, `restart`): the car is
offline while any hold lasts, and when the last one ends it reconnects after a random delay (jitter, from the
car's own fault stream), then with its usual backoff. Everything done is recorded as an `Injection` in `log`,
stamped with clock seconds since the faults attached.

What it does is also published into the run's event stream (the runner's `events`, handed over on attach):
`FaultChanged` when a fault is applied (`active=True`, `fault` its kind, `detail` its description) or ends
(`active=False`: a timed flaky, weak-signal, clock-skew or transport fault running out, `online` ending an
operator's `offline`, and a `clear` naming the family it cleared: `all`, `connectivity`, `clock`, `transport`),
when a car enters or leaves a no-signal zone (`fault="zone"`), and `BrokerAction` when the broker the run
started is stopped, killed, restarted or started again. A timed `offline` or `restart` ends on its own when the
car's hold runs out, with no event of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import random
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import structlog

from tcu_sim.clock import Clock, SkewedClock
from tcu_sim.events import BrokerAction, Event, EventStream, FaultChanged, Source
from tcu_sim.fleet import (
    CarSpec,
    ConnectivityProfile,
    FleetConfig,
    FleetError,
    FleetRunner,
    OutageDistribution,
    ScenarioAction,
    ScenarioStep,
    Zone,
    format_duration,
    select_cars,
)
from tcu_sim.protocol import ControlAction, encode_json
from tcu_sim.transport import BrokerAddress, FaultHandler, TcuSession

from ._errors import FaultSpecError, FaultUnavailable
from ._outage import OutageModel, fault_rng
from ._proxy import FaultProxy
from ._spec import (
    BandwidthFault,
    BlackHoleFault,
    CarFault,
    ClearFault,
    ClearWhat,
    ClockSkewFault,
    DataLimitFault,
    Direction,
    FaultKind,
    FlakyFault,
    LatencyFault,
    OfflineFault,
    OnlineFault,
    ResetFault,
    RestartFault,
    Scope,
    SlicerFault,
    Toxic,
    WeakSignalFault,
    describe_fault,
    fault_for_step,
    parse_fault,
)

__all__ = [
    "CarFaults",
    "ControllableBroker",
    "FaultLog",
    "FleetFaults",
    "Injection",
    "ProxyMode",
    "TransportBackend",
]

log = structlog.get_logger("tcu_sim.faults")

_CONTROL_ACTIONS = frozenset(a.value for a in ControlAction if a is not ControlAction.FAULT)
_BOOT_S = 5.0  # how long a restarted TCU takes to boot when the fault does not say
_IDS_KEPT = 64  # fault ids remembered per car (and per route) to apply a redelivered fault once
_TOXICS = (LatencyFault, BandwidthFault, BlackHoleFault, ResetFault, SlicerFault, DataLimitFault)


class ProxyMode(StrEnum):
    """How cars reach the broker: directly, through one proxy route per group, or one per car."""

    NONE = "none"
    GROUP = "group"
    CAR = "car"


class TransportBackend(Protocol):
    """Where transport faults are applied: the in-process `FaultProxy` or a `ToxiproxyClient`."""

    async def route_for(self, name: str, group: str | None, upstream: tuple[str, int]) -> tuple[str, int]:
        """Make sure route `name` exists towards `upstream`; the address cars connect to."""
        ...

    async def add_toxic(self, name: str, toxic: Toxic) -> None: ...

    async def remove_toxic(self, name: str, kind: FaultKind, direction: Direction | None = None) -> None: ...

    async def clear_route(self, name: str) -> None: ...

    async def close(self) -> None: ...


class ControllableBroker(Protocol):
    """A broker this run started and may stop, kill and start again (`MosquittoBroker` is one)."""

    async def stop(self) -> None: ...

    async def kill(self) -> None: ...

    async def start(self) -> None: ...

    async def restart(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Injection:
    """One thing the fault layer did, or refused to do (`refused` says why)."""

    at: float
    """Clock seconds since the faults attached (the run's timeline)."""
    target: str
    """A VIN, a proxy route (`route:leon`), `broker` or `fleet`."""
    what: str
    source: str
    """Who asked: `profile`, `timeline`, `control`, `zone`, `flaky`, `weak_signal`, `scenario`."""
    detail: str = ""
    refused: str | None = None

    def line(self) -> str:
        """`  1m05s  VSS…  offline hard for 30s  [timeline]` — one line of a report."""
        text = f"{format_duration(self.at):>8}  {self.target:<17}  {self.what}"
        if self.detail:
            text += f" ({self.detail})"
        text += f"  [{self.source}]"
        if self.refused:
            text += f"  REFUSED: {self.refused}"
        return text


class FaultLog:
    """The injections of a run, in order (bounded: the oldest are dropped and counted past `limit`)."""

    def __init__(self, limit: int = 20_000) -> None:
        self.entries: deque[Injection] = deque(maxlen=limit)
        self.dropped = 0
        self.listeners: list[Callable[[Injection], None]] = []

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return f"FaultLog(entries={len(self.entries)}, dropped={self.dropped})"

    def add(self, injection: Injection) -> None:
        if len(self.entries) == self.entries.maxlen:
            self.dropped += 1
        self.entries.append(injection)
        for listener in self.listeners:
            listener(injection)


class CarFaults:
    """The faults of one car: its offline holds, random drops, signal, clock, and zone."""

    def __init__(self, owner: FleetFaults, session: TcuSession, *, group: str | None, rng: random.Random) -> None:
        self.owner = owner
        self.session = session
        self.vin = session.vin
        self.group = group
        self.rng = rng
        self.holds: dict[str, float] = {}
        self.zone: Zone | None = None
        self.base_signal = session.signal_pct
        self.skew_s = 0.0
        self.drops = 0
        self.zone_entries = 0
        self.offline_since: float | None = None
        self._held = False
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._seen: deque[str] = deque(maxlen=_IDS_KEPT)

    def __repr__(self) -> str:
        now = self.owner.clock.monotonic()
        holds = ", ".join(sorted(r for r, until in self.holds.items() if until > now)) or "none"
        zone = self.zone.name if self.zone is not None else None
        return f"CarFaults({self.vin}, holds=[{holds}], zone={zone!r}, skew={self.skew_s:g}s, drops={self.drops})"

    @property
    def offline(self) -> bool:
        """Whether some fault holds the car offline right now."""
        now = self.owner.clock.monotonic()
        return any(until > now for until in self.holds.values())

    @property
    def loops(self) -> list[str]:
        """The random-drop loops running (`flaky`, `weak_signal`)."""
        return [name for name, task in self._tasks.items() if not task.done() and name in ("flaky", "weak_signal")]

    # --- offline holds --------------------------------------------------------------------------------------
    def hold(self, reason: str, seconds: float | None, *, hard: bool = True) -> None:
        """Keep the car offline for `seconds` (None: until released) because of `reason`; a timed hold ends with
        the reconnect jitter added."""
        now = self.owner.clock.monotonic()
        until = math.inf if seconds is None else now + seconds + self.owner.jitter(self.rng)
        self.holds[reason] = until
        self._sync(hard=hard)

    def release(self, reason: str) -> None:
        """End the hold for `reason` (the car reconnects, with jitter, once no other hold remains)."""
        if self.holds.pop(reason, None) is not None:
            self._sync()

    def _sync(self, *, hard: bool = True) -> None:
        now = self.owner.clock.monotonic()
        self.holds = {reason: until for reason, until in self.holds.items() if until > now}
        session = self.session
        if not self.holds:
            if self._held:
                self._held = False
                self.offline_since = None
                # Drawn whether or not it is needed: the car's fault stream must not depend on network timing.
                delay = self.owner.jitter(self.rng)
                if not session.online:
                    session.go_online(after_s=delay)
            return
        until = max(self.holds.values())
        remaining = until - now
        if session.online or not self._held:
            session.go_offline(None if math.isinf(until) else remaining, hard=hard)
        elif math.isinf(until):
            session.go_offline(None, hard=hard)
        else:
            session.go_online(after_s=remaining)  # re-arms the session's wait with the new end (wakes it)
        if not self._held:
            self.offline_since = now
        self._held = True

    # --- applying faults ------------------------------------------------------------------------------------
    async def apply(self, fault: CarFault, *, source: str) -> bool:
        """Apply one fault (see `tcu_sim.faults._spec`); False when it was a repeat (same id) or refused."""
        if fault.id is not None:
            if fault.id in self._seen:
                return False
            self._seen.append(fault.id)
        if isinstance(fault, _TOXICS):
            return await self.owner.apply_toxic(self, fault, source=source)
        self.owner.record(self.vin, describe_fault(fault), source)
        self.owner.changed(self.vin, fault)
        match fault:
            case OfflineFault():
                self.hold("operator", fault.duration_s, hard=fault.hard)
            case OnlineFault():
                self.release("operator")
            case RestartFault():
                self.hold("restart", fault.duration_s or _BOOT_S)
            case FlakyFault():
                self._start_drops("flaky", OutageModel.of(fault), fault.duration_s)
            case WeakSignalFault():
                await self._weak_signal(fault, source)
            case ClockSkewFault():
                self.set_skew(fault.skew_s)
                self._end_after("clock", fault.duration_s)
            case ClearFault():
                await self.clear(fault.what)
        return True

    async def _weak_signal(self, fault: WeakSignalFault, source: str) -> None:
        self.session.signal_pct = fault.signal_pct
        if fault.drop_rate > 0:
            self._start_drops("weak_signal", OutageModel.of(fault), fault.duration_s)
        elif fault.duration_s is not None:
            self._end_after("weak_signal", fault.duration_s)
        if self.owner.backend is not None and (fault.latency_ms or fault.jitter_ms):
            latency = LatencyFault(latency_ms=fault.latency_ms, jitter_ms=fault.jitter_ms, duration_s=fault.duration_s)
            await self.owner.apply_toxic(self, latency, source=source, quiet_refusal=True)
        if self.owner.backend is not None and fault.rate_kb_s is not None:
            bandwidth = BandwidthFault(rate_kb_s=fault.rate_kb_s, duration_s=fault.duration_s)
            await self.owner.apply_toxic(self, bandwidth, source=source, quiet_refusal=True)

    def set_skew(self, skew_s: float) -> None:
        """Run the car's message clock `skew_s` seconds off (0: back to the true clock)."""
        self.skew_s = skew_s
        clock = self.session.clock
        self.session.set_message_clock(SkewedClock(clock, skew_s) if skew_s else clock)

    async def clear(self, what: ClearWhat = ClearWhat.ALL) -> None:
        """End this car's faults (or one family of them). A zone is not a fault: it holds until the car leaves."""
        if what in (ClearWhat.ALL, ClearWhat.CONNECTIVITY):
            for name in ("flaky", "weak_signal", "end:weak_signal"):
                self._cancel(name)
            self.session.signal_pct = self.base_signal
            for reason in ("operator", "flaky", "weak_signal", "restart"):
                self.holds.pop(reason, None)
            self._sync()
        if what in (ClearWhat.ALL, ClearWhat.CLOCK):
            self._cancel("end:clock")
            self.set_skew(0.0)
        if what in (ClearWhat.ALL, ClearWhat.TRANSPORT):
            await self.owner.clear_routes(self)

    def _start_drops(self, name: str, model: OutageModel, duration_s: float | None) -> None:
        self._cancel(name)
        now = self.owner.clock.monotonic()
        until = None if duration_s is None else now + duration_s
        self._tasks[name] = self.owner.spawn(self._drop_loop(name, model, until), f"faults[{self.vin}].{name}")

    async def _drop_loop(self, name: str, model: OutageModel, until: float | None) -> None:
        clock = self.owner.clock
        while True:
            wait = model.next_drop_in(self.rng)
            now = clock.monotonic()
            if until is not None and now + wait >= until:
                await clock.sleep(until - now)
                break
            if math.isinf(wait):
                await asyncio.Event().wait()  # drop_rate 0 and no end: nothing ever happens
            await clock.sleep(wait)
            outage = model.outage_length(self.rng)
            self.drops += 1
            self.owner.record(self.vin, f"drop ({name.replace('_', ' ')})", name, f"outage {format_duration(outage)}")
            self.hold(name, outage)
            await clock.sleep(outage)
        self._finish(name)

    def _finish(self, name: str) -> None:
        """A timed flaky or weak-signal fault ran out."""
        self._tasks.pop(name, None)
        if name == "weak_signal":
            self.session.signal_pct = self.base_signal
        self.owner.record(self.vin, f"{name} ended", "timeline")
        self.owner.ended(self.vin, name)

    def _end_after(self, name: str, duration_s: float | None) -> None:
        if duration_s is None:
            return
        self._cancel(f"end:{name}")

        async def end() -> None:
            await self.owner.clock.sleep(duration_s)
            if name == "clock":
                self.set_skew(0.0)
                self.owner.record(self.vin, "clock_skew ended", "timeline")
                self.owner.ended(self.vin, FaultKind.CLOCK_SKEW.value)
            else:
                self._finish(name)

        self._tasks[f"end:{name}"] = self.owner.spawn(end(), f"faults[{self.vin}].end_{name}")

    def _cancel(self, name: str) -> None:
        task = self._tasks.pop(name, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    # --- zones ----------------------------------------------------------------------------------------------
    def enter_zone(self, zone: Zone) -> None:
        """The car is in a place without signal: the connection dies (last will), the outbox fills."""
        self.zone = zone
        self.zone_entries += 1
        self.owner.record(self.vin, f"enters {zone.kind.value} {zone.name!r}", "zone", "no signal")
        self.owner.publish_fault(self.vin, "zone", True, zone.name)
        self.hold("zone", None, hard=True)

    def leave_zone(self) -> None:
        """Signal again: reconnect after the jitter (unless another hold remains)."""
        zone, self.zone = self.zone, None
        name = zone.name if zone is not None else "?"
        self.owner.record(self.vin, f"leaves {name!r}", "zone", "signal back")
        self.owner.publish_fault(self.vin, "zone", False, name)
        self.release("zone")


class FleetFaults:
    """The fault layer of one fleet run (see the module docstring).

    `zones` and `steps` usually come from the fleet file (`from_config`); `proxy` routes cars through `backend`
    (default: an in-process `FaultProxy`); `broker` is the broker the run started, for broker faults;
    `run_timeline` runs `steps` on the clock (a `tcu-sim fleet run`; a scenario run drives steps itself).
    Clock durations: `reconnect_jitter_s` is the most a car waits after its signal returns; `zone_check_s` is
    how often moving cars are checked against the zones.
    """

    def __init__(
        self,
        *,
        zones: Sequence[Zone] = (),
        steps: Sequence[ScenarioStep] = (),
        proxy: ProxyMode = ProxyMode.NONE,
        backend: TransportBackend | None = None,
        broker: ControllableBroker | None = None,
        run_timeline: bool = False,
        apply_profiles: bool = True,
        reconnect_jitter_s: float = 5.0,
        zone_check_s: float = 1.0,
        seed: int = 0,
    ) -> None:
        self.zones = tuple(zones)
        self.steps = tuple(steps)
        self.proxy = proxy if backend is None else (proxy if proxy is not ProxyMode.NONE else ProxyMode.GROUP)
        self.backend: TransportBackend | None = backend
        self._own_backend = False
        self.broker = broker
        self.run_timeline = run_timeline
        self.apply_profiles = apply_profiles
        self.reconnect_jitter_s = reconnect_jitter_s
        self.zone_check_s = zone_check_s
        self.seed = seed
        self.log = FaultLog()
        self.cars: dict[str, CarFaults] = {}
        self.refused_controls = 0
        self.clock: Clock = _NotAttached()
        self.sessions: dict[str, TcuSession] = {}
        self.specs: list[CarSpec] = []
        self._spec_by_vin: dict[str, CarSpec] = {}
        self._routes: dict[str, tuple[str, int]] = {}
        self._route_of: dict[str, str] = {}
        self._route_ids: deque[tuple[str, str]] = deque(maxlen=_IDS_KEPT * 16)
        self._t0 = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        self._group: asyncio.TaskGroup | None = None
        self._exit: contextlib.AsyncExitStack | None = None
        #: Where applied and cleared faults and broker actions are published (the runner's, from `attach`).
        self.events: EventStream | None = None

    def __repr__(self) -> str:
        return (
            f"FleetFaults(cars={len(self.sessions)}, zones={len(self.zones)}, proxy={self.proxy.value},"
            f" injections={len(self.log)}, faulty={len(self.cars)})"
        )

    @classmethod
    def from_config(cls, config: FleetConfig, **kwargs: Any) -> FleetFaults:
        """The faults of a fleet file: its zones, its timeline, its seed."""
        kwargs.setdefault("zones", config.zones)
        kwargs.setdefault("steps", config.scenario)
        kwargs.setdefault("seed", config.seed)
        return cls(**kwargs)

    # --- lifecycle -------------------------------------------------------------------------------------------
    @property
    def fault_handler(self) -> FaultHandler:
        """What takes the cars' `fault` controls (the runner gives it to every session)."""
        return self._on_control

    async def attach(self, runner: FleetRunner) -> None:
        """Take over a fleet before its cars connect (called by `FleetRunner.__aenter__`)."""
        await self.bind(
            runner.sessions, runner.cars, runner.clock, (runner.broker.host, runner.broker.port), events=runner.events
        )

    async def bind(
        self,
        sessions: dict[str, TcuSession],
        specs: Sequence[CarSpec],
        clock: Clock,
        upstream: tuple[str, int],
        *,
        events: EventStream | None = None,
    ) -> None:
        """Attach to these sessions (the parts of a runner `attach` uses; tests may call it directly). Their
        `fault` controls reach this layer when they were made with its `fault_handler`. On failure, what was
        started is stopped again."""
        self.clock = clock
        self.sessions = sessions
        self.specs = list(specs)
        self._spec_by_vin = {spec.vin: spec for spec in self.specs}
        self.events = events
        self._t0 = clock.monotonic()
        # Stopped in reverse by `detach`, or right here when a step fails: fault tasks, their group, the proxy.
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(self._close_backend)
            self._group = await stack.enter_async_context(asyncio.TaskGroup())
            stack.callback(self._cancel_tasks)
            if self.proxy is not ProxyMode.NONE:
                if self.backend is None:
                    self.backend = FaultProxy(*upstream, rng=random.Random(self.seed))
                    self._own_backend = True
                for spec in self.specs:
                    name = spec.vin if self.proxy is ProxyMode.CAR else spec.group
                    self._route_of[spec.vin] = name
                    if name not in self._routes:
                        self._routes[name] = await self.backend.route_for(name, spec.group, upstream)
            if self.apply_profiles:
                for spec in self.specs:
                    await self._apply_profile(spec)
            if self.zones:
                self._check_zones({})  # a car parked in a car park starts without signal
                self.spawn(self._zone_loop(), "faults.zones")
            if self.run_timeline and self.steps:
                self.spawn(self._timeline_loop(), "faults.timeline")
            self._exit = stack.pop_all()
        log.info("faults attached", cars=len(sessions), zones=len(self.zones), proxy=self.proxy.value,
                 routes=len(self._routes))

    async def detach(self) -> None:
        """Stop every fault task and close the proxy this layer opened (what `bind` started, in reverse)."""
        exit_stack, self._exit = self._exit, None
        self._group = None  # no new fault task from here on
        if exit_stack is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await exit_stack.aclose()

    def _cancel_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self._tasks.clear()

    async def _close_backend(self) -> None:
        if self._own_backend and self.backend is not None:
            await self.backend.close()
            self.backend = None
            self._own_backend = False

    def spawn(self, coro: Any, name: str) -> asyncio.Task[None]:
        """Run a fault task owned by this layer (cancelled on `detach`); it logs instead of raising."""
        if self._group is None:
            coro.close()
            raise FaultUnavailable("the fault layer is not attached to a running fleet")
        task = self._group.create_task(self._guard(coro, name), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @staticmethod
    async def _guard(coro: Any, name: str) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:  # one fault task failing must not take the fleet down
            log.exception("fault task failed", task=name)

    # --- helpers --------------------------------------------------------------------------------------------
    def now(self) -> float:
        """Clock seconds since the faults attached."""
        return self.clock.monotonic() - self._t0

    def jitter(self, rng: random.Random) -> float:
        """A reconnect delay after the signal returns: uniform in [0, reconnect_jitter_s]."""
        return rng.uniform(0.0, self.reconnect_jitter_s) if self.reconnect_jitter_s > 0 else 0.0

    def publish(self, event: Event) -> None:
        """Publish `event` into the run's event stream (when it has one)."""
        if self.events is not None:
            self.events.publish(event)

    def publish_fault(self, target: str, fault: str, active: bool, detail: str = "") -> None:
        """A fault on `target` was applied (`active`) or ended: tell the run's event stream."""
        if self.events is not None:
            at = self.clock.now()
            self.events.publish(
                FaultChanged(at=at, source=Source.FAULTS, target=target, fault=fault, active=active, detail=detail)
            )

    def changed(self, target: str, fault: CarFault) -> None:
        """`fault` was applied on `target`: publish what became active (or, for `online` and `clear`, ended)."""
        match fault:
            case OnlineFault():
                self.publish_fault(target, FaultKind.OFFLINE.value, False, "online")
            case ClearFault():
                self.publish_fault(target, fault.what.value, False, describe_fault(fault))
            case _:
                self.publish_fault(target, fault.kind.value, True, describe_fault(fault))

    def ended(self, target: str, fault: str) -> None:
        """A fault (kind, or cleared family) on `target` ran out or was cleared."""
        self.publish_fault(target, fault, False, f"{fault} ended")

    def record(self, target: str, what: str, source: str, detail: str = "", refused: str | None = None) -> None:
        """Add an injection to the log (and tell the log's listeners)."""
        self.log.add(Injection(self.now(), target, what, source, detail, refused))
        if refused:
            log.warning("fault refused", target=target, what=what, reason=refused)
        else:
            log.info("fault", target=target, what=what, source=source, detail=detail or None)

    def car(self, vin: str) -> CarFaults:
        """The fault state of one car (created on first use)."""
        car = self.cars.get(vin)
        if car is None:
            session = self.sessions.get(vin)
            if session is None:
                raise FaultUnavailable(f"no car {vin} in this run")
            spec = self._spec_by_vin.get(vin)
            seed = spec.seed if spec is not None else self.seed
            car = CarFaults(self, session, group=spec.group if spec else None, rng=fault_rng(seed, vin))
            self.cars[vin] = car
        return car

    def address_for(self, vin: str, default: BrokerAddress) -> BrokerAddress:
        """Where car `vin` connects: its proxy route, or the broker itself."""
        name = self._route_of.get(vin)
        if name is None:
            return default
        host, port = self._routes[name]
        return dataclasses.replace(default, host=host, port=port)

    def select(self, selectors: Iterable[str]) -> list[CarSpec]:
        """The cars of this run matching the selectors (FaultSpecError for one that matches none)."""
        try:
            return select_cars(self.specs, list(selectors))
        except FleetError as exc:
            raise FaultSpecError(str(exc)) from None

    # --- profiles and zones ---------------------------------------------------------------------------------
    async def _apply_profile(self, spec: CarSpec) -> None:
        conn = spec.connectivity
        session = self.sessions.get(spec.vin)
        if session is None:
            return
        if conn.signal_pct is not None:
            session.signal_pct = conn.signal_pct
        profile = conn.profile
        if profile is ConnectivityProfile.GOOD:
            return
        car = self.car(spec.vin)
        car.base_signal = session.signal_pct
        if profile is ConnectivityProfile.OFFLINE:
            await car.apply(OfflineFault(duration_s=conn.outage_s), source="profile")
        elif profile is ConnectivityProfile.FLAKY:
            fault = FlakyFault(  # a resolved flaky profile sets all three; the defaults only satisfy the types
                drop_rate=conn.drop_rate or 0.1,
                outage_s=conn.outage_s or 30.0,
                distribution=conn.outage_distribution or OutageDistribution.EXPONENTIAL,
            )
            await car.apply(fault, source="profile")
        elif profile is ConnectivityProfile.WEAK:
            # A profile describes coverage, not chance: a weak group reports its signal and is slow on its proxy
            # route, but drops only when a fault says so (`flaky` is the profile that drops).
            await car.apply(WeakSignalFault(signal_pct=conn.signal_pct or 0, drop_rate=0), source="profile")

    async def _zone_loop(self) -> None:
        positions: dict[str, tuple[float, float]] = {}
        while True:
            await self.clock.sleep(self.zone_check_s)
            self._check_zones(positions)

    def _check_zones(self, positions: dict[str, tuple[float, float]]) -> None:
        for vin, session in self.sessions.items():
            vehicle = session.vehicle
            if vehicle.moving:
                session.tick()  # brings the car's position up to now (and reports what changed)
            position = vehicle.position
            if positions.get(vin) == position:
                continue
            positions[vin] = position
            zone = next((z for z in self.zones if z.contains(*position)), None)
            known = self.cars.get(vin)
            current = known.zone if known is not None else None
            if zone == current:
                continue
            car = known or self.car(vin)
            if current is not None:
                car.leave_zone()
            if zone is not None:
                car.enter_zone(zone)

    # --- transport ------------------------------------------------------------------------------------------
    def _routes_for(self, car: CarFaults, scope: Scope) -> list[str]:
        own = self._route_of.get(car.vin)
        if own is None:
            return []
        if scope is Scope.CAR or self.proxy is ProxyMode.GROUP:
            return [own]
        return sorted({self._route_of[s.vin] for s in self.specs if s.group == car.group and s.vin in self._route_of})

    async def apply_toxic(
        self, car: CarFaults, toxic: Toxic, *, source: str, quiet_refusal: bool = False
    ) -> bool:
        """Put a transport fault on the car's route (or its group's routes), for its duration."""
        backend = self.backend
        routes = self._routes_for(car, toxic.scope)
        if backend is None or not routes:
            if not quiet_refusal:
                self.record(car.vin, describe_fault(toxic), source,
                            refused="this run has no fault proxy (start it with a proxy mode, or use Toxiproxy)")
            return False
        applied = False
        for route in routes:
            if toxic.id is not None:
                if (toxic.id, route) in self._route_ids:
                    continue  # the same group fault, sent to every car of the group: once per route
                self._route_ids.append((toxic.id, route))
            await backend.add_toxic(route, toxic)
            applied = True
            note = "" if route == car.vin else f"on route {route}"
            target = f"route:{route}" if route != car.vin else car.vin
            self.record(target, describe_fault(toxic), source, note)
            self.changed(target, toxic)
            if toxic.duration_s is not None:
                self.spawn(self._remove_toxic_later(route, toxic), f"faults.route[{route}].end_{toxic.kind.value}")
        return applied

    async def _remove_toxic_later(self, route: str, toxic: Toxic) -> None:
        assert toxic.duration_s is not None
        await self.clock.sleep(toxic.duration_s)
        if self.backend is not None:
            await self.backend.remove_toxic(route, toxic.kind, toxic.direction)
            self.record(f"route:{route}", f"{toxic.kind.value} ended", "timeline")
            self.ended(f"route:{route}", toxic.kind.value)

    async def clear_routes(self, car: CarFaults) -> None:
        """Take every transport fault off the car's own route."""
        if self.backend is not None:
            for route in self._routes_for(car, Scope.CAR):
                await self.backend.clear_route(route)
                self.record(f"route:{route}", "transport faults cleared", "control")
                self.ended(f"route:{route}", ClearWhat.TRANSPORT.value)

    # --- live control (`fault` on sim/{vin}/control) --------------------------------------------------------
    def _on_control(self, session: TcuSession, params: dict[str, Any]) -> str | None:
        """Take a `fault` control (None), or say why not (the car's reply to the operator)."""
        try:
            fault = parse_fault(params)
        except FaultSpecError as exc:
            self.refused_controls += 1
            self.record(session.vin, f"fault {str(params.get('kind', '?'))[:32]}", "control", refused=str(exc))
            return str(exc)
        if isinstance(fault, _TOXICS) and (self.backend is None or session.vin not in self._route_of):
            refused = "this run has no fault proxy (start it with a proxy mode, or use Toxiproxy)"
            self.refused_controls += 1
            self.record(session.vin, describe_fault(fault), "control", refused=refused)
            return refused
        # Applied on a task: the control arrived inside the MQTT read callback, and a hard drop right here
        # would cut the connection before the PUBACK for this very message went out (the broker would send
        # the fault again on reconnect; the id makes that harmless, but it should not happen at all).
        self.spawn(self._apply_control(session.vin, fault), f"faults[{session.vin}].control")
        return None

    async def _apply_control(self, vin: str, fault: CarFault) -> None:
        await asyncio.sleep(0)  # one loop turn: the socket's write callback sends the PUBACK first
        await self.car(vin).apply(fault, source="control")

    # --- timeline steps -------------------------------------------------------------------------------------
    async def apply_step(self, step: ScenarioStep, *, source: str = "timeline") -> None:
        """Do what one timeline step says to the cars or the broker (app, attack and check steps need a scenario
        run: they are recorded as refused here)."""
        action = step.do
        target = ", ".join(step.cars or ()) or "fleet"
        if action.value.startswith("broker_"):
            await self.broker_action(action, step.duration, source=source)
            return
        if action.value in _CONTROL_ACTIONS:
            for spec in self.select(step.cars or ()):
                self._control(spec.vin, action.value, step.params, source)
            return
        try:
            fault = fault_for_step(step)
        except FaultSpecError as exc:
            self.record(target, action.value, source, refused=str(exc))
            return
        if fault is None:
            self.record(target, action.value, source, refused="needs a scenario run (tcu-sim scenario run)")
            return
        for spec in self.select(step.cars or ()):
            await self.car(spec.vin).apply(fault, source=source)

    def _control(self, vin: str, action: str, params: dict[str, Any], source: str) -> None:
        session = self.sessions[vin]
        before = session.stats.controls_refused
        session.handle_control(encode_json({"action": action, "params": params}))
        refused = "the car refused it (see its log)" if session.stats.controls_refused > before else None
        detail = ", ".join(f"{k}={v}" for k, v in params.items() if k not in {"password", "pairing_code"})
        self.record(vin, action, source, detail, refused)

    async def broker_action(self, action: ScenarioAction, duration: float | None, *, source: str) -> None:
        """Stop, kill or restart the broker this run started (`duration`: start it again after that long)."""
        name = action.value.removeprefix("broker_")
        broker = self.broker
        if broker is None:
            self.record("broker", name, source, refused="this run did not start the broker")
            return
        detail = f"back after {format_duration(duration)}" if duration and name != "restart" else ""
        self.record("broker", name, source, detail)
        if action is ScenarioAction.BROKER_STOP:
            await broker.stop()
        elif action is ScenarioAction.BROKER_KILL:
            await broker.kill()
        else:
            await broker.restart()
        self.publish(BrokerAction(at=self.clock.now(), source=Source.FAULTS, action=name, detail=detail))
        if duration and action is not ScenarioAction.BROKER_RESTART:
            self.spawn(self._start_broker_later(duration, source), "faults.broker_start")

    async def _start_broker_later(self, duration: float, source: str) -> None:
        await self.clock.sleep(duration)
        assert self.broker is not None
        self.record("broker", "start", source)
        await self.broker.start()
        self.publish(BrokerAction(at=self.clock.now(), source=Source.FAULTS, action="start"))

    async def _timeline_loop(self) -> None:
        for step in sorted(self.steps, key=lambda s: s.at):
            wait = step.at - self.now()
            if wait > 0:
                await self.clock.sleep(wait)
            try:
                await self.apply_step(step)
            except FaultSpecError as exc:
                self.record(", ".join(step.cars or ()) or "fleet", step.do.value, "timeline", refused=str(exc))


class _NotAttached:
    """The clock of a fault layer not attached yet: any use is a bug."""

    def now(self) -> float:
        raise FaultUnavailable("the fault layer is not attached to a running fleet")

    def monotonic(self) -> float:
        raise FaultUnavailable("the fault layer is not attached to a running fleet")

    async def sleep(self, seconds: float) -> None:
        raise FaultUnavailable("the fault layer is not attached to a running fleet")
