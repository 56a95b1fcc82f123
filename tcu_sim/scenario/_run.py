"""Running a scenario: its own cloud, its fleet (through a fault proxy), apps, attacker, and a paced clock.

    scenario = load_scenario("fleet_configs/scenarios/tunnel-commute.yaml")
    report = await ScenarioRunner(scenario, mosquitto, workdir).run()
    print(report.text()); Path("junit.xml").write_text(report.junit_xml())

The run provisions a fresh state directory, builds the cloud with `broker.runtime` over a fresh SQLite registry
(users of the file registered, verified and enrolled directly through the cloud's services before its handler
starts), brings the fleet up on the given broker with `FleetFaults` (every car on its own proxy route by
default), opens an `AppClient` for every user an `app` step names, and then walks the timeline. Cloud, fleet and
faults publish into one event stream, `runner.events`; the `CloudObserver` reads what the cloud did from it.

Time: every component runs on one `VirtualClock`, which a pacer task moves forward in small ticks at
`time_scale` clock seconds per real second (`fast_scale` during a `fast_forward`). Network time stays real
(reconnect backoff, proxy latency), so the run is a sped-up real run whose timers fire in the same order every
time: fault draws come from seeded streams and are stamped in clock time. Expectations are checked as soon as
their step has run and pass the moment they hold, or fail once `within` clock seconds passed without.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import hashlib
import math
import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from broker.cloud import CloudServices, PasswordHasher, ServerSecret, load_manifest
from broker.handler import CloudHandler, HandlerConfig
from broker.mosquitto import MosquittoBroker
from broker.registry import Registry
from broker.runtime import BrokerLogin, CloudKeys, cloud_handler, open_services
from tcu_sim.app import (
    AppClient,
    AppConnectionError,
    AppRequestError,
    AppTimeout,
    AppTransportError,
    SpinIncorrect,
    SpinLocked,
)
from tcu_sim.clock import VirtualClock
from tcu_sim.events import EventStream
from tcu_sim.faults import Attacker, AttackKind, CommandForge, FleetFaults, ProxyMode, StatusForge, attack_grants
from tcu_sim.fleet import (
    BrokerUrl,
    CarSpec,
    FleetRunner,
    ScenarioAction,
    StateDir,
    UserRole,
    expand_fleet,
    format_duration,
    provision,
    select_cars,
)
from tcu_sim.onboard import in_car_step, plan_users, verification_code
from tcu_sim.protocol import ControlAction, Topics
from tcu_sim.transport import Backoff, TcuSession

from ._expect import Expectation, ExpectKind
from ._observe import CloudObserver, token_claims
from ._report import CarSummary, CloudSummary, ExpectationResult, ScenarioReport, StepRecord
from ._scenario import Scenario, ScenarioStepPlan

__all__ = ["ScenarioOptions", "ScenarioRunner"]

log = structlog.get_logger("tcu_sim.scenario")

@dataclass(frozen=True, slots=True)
class ScenarioOptions:
    """How a scenario run paces itself (clock seconds unless said otherwise)."""

    time_scale: float = 30.0
    """Clock seconds per real second while the timeline runs."""
    fast_scale: float = 600.0
    """Clock seconds per real second during a `fast_forward`."""
    tick_s: float = 0.25
    """The pacer's clock step."""
    proxy: ProxyMode = ProxyMode.CAR
    reconnect_jitter_s: float = 3.0
    backoff: Backoff = field(default_factory=lambda: Backoff(base_s=0.05, cap_s=1.0))
    """Reconnect backoff of cars (real seconds: network time)."""
    online_timeout_s: float = 30.0
    """Real seconds for the fleet and the cloud to come up."""
    step_timeout_s: float = 15.0
    """Real seconds an app request or an attack's answer may take."""


@dataclass(slots=True)
class _AppOutcome:
    vin: str
    command_id: str | None = None
    error: AppRequestError | None = None
    transport_error: str | None = None
    result: dict[str, Any] | None = None

    def describe(self) -> str:
        if self.error is not None:
            return f"{self.error.code.value}{_error_details(self.error)}"
        if self.transport_error is not None:
            return f"no answer ({self.transport_error})"
        return f"command {self.command_id}" if self.command_id else "ok"


@dataclass(slots=True)
class _AttackOutcome:
    vin: str
    kind: AttackKind
    observed: str | None
    unchanged: bool
    detail: str

    def describe(self) -> str:
        seen = self.observed or "no answer"
        return f"{self.vin}: {seen}{'' if self.unchanged else ' (STATE CHANGED)'}"


@dataclass(slots=True)
class _StepResult:
    outcome: str = "done"
    apps: list[_AppOutcome] = field(default_factory=list)
    attacks: list[_AttackOutcome] = field(default_factory=list)


def _error_details(error: AppRequestError) -> str:
    if isinstance(error, SpinIncorrect):
        return f" (remaining_tries {error.remaining_tries})"
    if isinstance(error, SpinLocked):
        return f" (locked_seconds {error.locked_seconds})"
    return ""


class ScenarioRunner:
    """Runs one scenario against `broker` (a `MosquittoBroker` the caller started: the run may stop, kill and
    restart it), in `workdir` (state directory and registry are created there). Cloud, fleet and faults publish
    into `events` (a new stream when not given)."""

    def __init__(
        self,
        scenario: Scenario,
        broker: MosquittoBroker,
        workdir: Path,
        options: ScenarioOptions | None = None,
        *,
        events: EventStream | None = None,
    ) -> None:
        self.scenario = scenario
        self.broker = broker
        self.workdir = Path(workdir)
        self.options = options or ScenarioOptions()
        self.clock = VirtualClock()
        #: What cloud, fleet and faults report during the run (SPEC §8).
        self.events = events if events is not None else EventStream(f"scenario[{scenario.name}]")
        self.topics = Topics(scenario.config.topic_prefix)
        self.faults: FleetFaults | None = None
        self.fleet: FleetRunner | None = None
        self.specs: list[CarSpec] = []
        self._t0 = 0.0
        self._fast_until: float | None = None
        self._tick = asyncio.Condition()
        self._outbox_peak: Counter[str] = Counter()
        self._seq_marks: defaultdict[str, list[tuple[float, int]]] = defaultdict(list)
        self._apps: dict[str, AppClient] = {}
        self._app_exits: dict[str, contextlib.AsyncExitStack] = {}
        self._app_logins: dict[str, tuple[str, str]] = {}
        self._wiretaps: dict[str, list[bytes]] = {}
        self._observer: CloudObserver | None = None
        self._handler: CloudHandler | None = None
        self._services: CloudServices | None = None
        self._commands: dict[str, str] = {}

    @property
    def _registry(self) -> Registry:
        assert self._services is not None  # opened first in `_run`
        return self._services.registry

    def __repr__(self) -> str:
        return f"ScenarioRunner({self.scenario.name!r}, broker={self.broker!r}, clock={self.clock!r})"

    # --- the run --------------------------------------------------------------------------------------------
    async def run(self) -> ScenarioReport:
        """Run the scenario; the report (never raises for a failed expectation or a broken run)."""
        config = self.scenario.config
        report = ScenarioReport(config.name, self.scenario.source, config.seed, config.description)
        started = time.monotonic()
        try:
            await self._run(report)
        except Exception as exc:
            log.exception("scenario run broke", scenario=config.name)
            report.error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        report.real_s = time.monotonic() - started
        return report

    async def _run(self, report: ScenarioReport) -> None:
        config, options, clock, broker = self.scenario.config, self.options, self.clock, self.broker
        self.workdir.mkdir(parents=True, exist_ok=True)
        state = StateDir(self.workdir / "state")
        provision(config, state, clock=clock, pki=False)
        self.specs = expand_fleet(config, today=datetime.fromtimestamp(clock.now(), UTC).date())
        async with contextlib.AsyncExitStack() as stack:
            secret = ServerSecret(hashlib.sha256(f"tcu-sim scenario {config.seed}".encode()).digest())
            services = await stack.enter_async_context(
                open_services(
                    f"sqlite://{self.workdir}/cloud.db",
                    clock=clock,
                    secret=secret,
                    vehicles=load_manifest(state.manifest_path),
                    passwords=PasswordHasher.for_tests(),
                    rng=random.Random(config.seed),
                    pool_size=4,
                )
            )
            self._services = services
            await self._seed_users(services)
            handler_config = HandlerConfig(
                topic_prefix=config.topic_prefix,
                client_id="cloud",  # the broker forces the client id to the certificate's CN (SPEC §7)
                app_workers=1,
                reconnect_base_s=0.05,
                reconnect_cap_s=0.25,  # real seconds: back before the cars' next statuses after a broker restart
            )
            handler = cloud_handler(
                services,
                handler_config,
                BrokerLogin(broker.host, broker.port, tls_context=broker.ssl_context("cloud")),
                keys=CloudKeys(state.load_cloud_signing_key(), state.load_fleet_keys(), secret),
                events=self.events,
                rng=random.Random(config.seed),
            )
            self._observer = stack.enter_context(CloudObserver(self.events))  # before the cloud handles anything
            await stack.enter_async_context(handler)
            await handler.wait_ready(options.online_timeout_s)
            self._handler = handler

            faults = FleetFaults.from_config(
                config, proxy=options.proxy, broker=broker, reconnect_jitter_s=options.reconnect_jitter_s
            )
            self.faults = faults
            fleet = FleetRunner(
                self.specs,
                state=state,
                broker=BrokerUrl(broker.host, broker.port, True),
                clock=clock,
                topic_prefix=config.topic_prefix,
                tls_for=broker.ssl_context,
                backoff=options.backoff,
                faults=faults,
                events=self.events,
            )
            self.fleet = fleet
            await stack.enter_async_context(fleet)
            await self._wait_online()
            await self._open_apps(stack)
            attacker = Attacker(broker.client, self.topics)
            # The attacker's wiretaps and cloned cars have certificates of their own (the client id is the CN).
            await broker.grant(attack_grants(self.topics, [spec.vin for spec in self.specs]))
            await self._open_wiretaps(stack, attacker)
            self._t0 = clock.monotonic()
            pacer = asyncio.create_task(self._pace(), name=f"scenario[{config.name}].pacer")
            try:
                await self._timeline(report, attacker, state)
            finally:
                pacer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pacer
                report.clock_s = clock.monotonic() - self._t0
                report.injections = list(faults.log.entries)
                report.cars = await self._car_summaries()
                report.cloud = await self._cloud_summary()

    async def _timeline(self, report: ScenarioReport, attacker: Attacker, state: StateDir) -> None:
        checks: list[asyncio.Task[ExpectationResult]] = []
        for plan in self.scenario.plan:
            await self._until(plan.step.at)
            at = self._now()
            result = await self._do(plan, attacker, state)
            report.steps.append(StepRecord(plan.index, at, plan.headline(), result.outcome))
            log.info("scenario step", step=plan.headline(), outcome=result.outcome)
            for expectation in plan.expectations:
                name = f"scenario.expect[{plan.index}].{expectation.kind.value}"
                checks.append(asyncio.create_task(self._check(plan, expectation, result, at), name=name))
        for check in checks:
            report.expectations.append(await check)

    # --- time -----------------------------------------------------------------------------------------------
    def _now(self) -> float:
        return self.clock.monotonic() - self._t0

    async def _pace(self) -> None:
        options = self.options
        while True:
            fast = self._fast_until is not None and self.clock.monotonic() < self._fast_until
            await self.clock.advance(options.tick_s)
            if self._observer is not None:
                self._observer.catch_up()  # keeps the observer's buffer to one tick of messages
            if self.fleet is not None:
                now = self._now()
                for vin, session in self.fleet.sessions.items():
                    if len(session.outbox) > self._outbox_peak[vin]:
                        self._outbox_peak[vin] = len(session.outbox)
                    marks = self._seq_marks[vin]
                    if not marks or marks[-1][1] != session.seq.last_issued:
                        marks.append((now, session.seq.last_issued))
            async with self._tick:
                self._tick.notify_all()
            await asyncio.sleep(options.tick_s / (options.fast_scale if fast else options.time_scale))

    async def _next_tick(self) -> None:
        async with self._tick:
            await self._tick.wait()

    async def _until(self, at: float) -> None:
        while self._now() < at:
            await self._next_tick()

    # --- set-up ---------------------------------------------------------------------------------------------
    async def _seed_users(self, services: CloudServices) -> None:
        """Register, verify and enrol the file's users (`tcu_sim.onboard`'s plan and steps) through the cloud's own
        services: this runs before the handler starts and before any car is online, so there is no app to ask
        and no car to do the in-car step at; the cloud completes that step as if the car had reported it."""
        config = self.scenario.config
        plan = plan_users(config, self.specs)
        tokens: dict[str, str] = {}
        for user in config.users:
            password, spin = user.password.get_secret_value(), user.spin.get_secret_value()
            await services.accounts.register(user.email, password, spin)
            if user.verified:
                mails = await services.accounts.mailbox_for(user.email)
                code = verification_code(mail.body for mail in mails)
                if code is not None:
                    await services.accounts.verify_email(code)
            tokens[user.email] = (await services.accounts.login(user.email, password)).token
        for user in config.users:
            if user.role is not UserRole.PRIMARY or not user.verified:
                continue
            for vin in plan.wanted[user.email]:
                added = await services.garage.add_vehicle(tokens[user.email], vin, True)
                step = in_car_step(vin, added.method, added.pairing_code)
                if step.action is ControlAction.ENTER_PAIRING_CODE:
                    await services.garage.complete_by_pairing_code(vin, added.pairing_code or "")
                else:
                    await services.garage.complete_by_tkov(vin, user.email)
        for user in config.users:
            if user.role is not UserRole.SECONDARY:
                continue
            for vin in plan.wanted[user.email]:
                primary = plan.primary_of[vin]
                await services.garage.invite_secondary(tokens[primary.email], vin, user.email)

    async def _wait_online(self) -> None:
        assert self.fleet is not None
        assert self.faults is not None
        deadline = time.monotonic() + self.options.online_timeout_s
        for vin, session in self.fleet.sessions.items():
            car = self.faults.cars.get(vin)
            if car is not None and car.offline:
                continue  # an offline profile or a car park: it is meant not to connect yet
            try:
                await session.wait_online(max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                raise TimeoutError(f"car {vin} not online after {self.options.online_timeout_s:g} s") from None

    async def _open_apps(self, stack: contextlib.AsyncExitStack) -> None:
        users = {p.step.user.lower() for p in self.scenario.plan if p.app is not None and p.step.user}
        stack.push_async_callback(self._close_apps)
        for i, email in enumerate(sorted(users), 1):
            user = next(u for u in self.scenario.config.users if u.email.lower() == email)
            username = f"scenario-app-{i}"
            self._app_logins[email] = (username, await self.broker.add_app_user(username))
            client = await self._connect_app(email)
            await client.login(user.email, user.password.get_secret_value())

    async def _connect_app(self, email: str, token: str | None = None) -> AppClient:
        broker = self.broker
        username, mqtt_password = self._app_logins[email]
        exits = contextlib.AsyncExitStack()
        app = AppClient(
            broker.host,
            broker.app_port or 0,
            username,
            mqtt_password,
            tls_context=broker.ssl_context(None) if broker.app_tls else None,
            token=token,
            topics=self.topics,
            timeout=self.options.step_timeout_s,
            rng=random.Random(f"{self.scenario.config.seed}:{email}:{len(self._apps)}"),
        )
        client = await exits.enter_async_context(app)
        self._apps[email], self._app_exits[email] = client, exits
        return client

    async def _reconnect_app(self, email: str) -> AppClient:
        """The app's connection died with the broker: close it and connect again with the same session."""
        old = self._apps.pop(email)
        with contextlib.suppress(Exception):
            await self._app_exits.pop(email).aclose()
        return await self._connect_app(email, old.token)

    async def _close_apps(self) -> None:
        for exits in list(self._app_exits.values()):
            with contextlib.suppress(Exception):
                await exits.aclose()
        self._app_exits.clear()
        self._apps.clear()

    async def _open_wiretaps(self, stack: contextlib.AsyncExitStack, attacker: Attacker) -> None:
        for plan in self.scenario.plan:
            if plan.attack is None or plan.attack.kind is not AttackKind.REPLAY:
                continue
            for spec in select_cars(self.specs, plan.step.cars or ()):
                if spec.vin not in self._wiretaps:
                    self._wiretaps[spec.vin] = await stack.enter_async_context(attacker.wiretap(spec.vin))

    # --- steps ----------------------------------------------------------------------------------------------
    async def _do(self, plan: ScenarioStepPlan, attacker: Attacker, state: StateDir) -> _StepResult:
        step = plan.step
        assert self.faults is not None
        if plan.app is not None:
            return await self._app(plan)
        if plan.attack is not None:
            return await self._attacks(plan, attacker, state)
        if step.do is ScenarioAction.CHECK:
            return _StepResult("check")
        if step.do is ScenarioAction.FAST_FORWARD:
            assert step.duration is not None  # validated: fast_forward has a duration
            self._fast_until = self.clock.monotonic() + step.duration
            await self._until(self._fast_until - self._t0)
            self._fast_until = None
            return _StepResult(f"clock moved on {format_duration(step.duration)}")
        before = len(self.faults.log)
        await self.faults.apply_step(step, source="scenario")
        new = list(self.faults.log.entries)[before:]
        refused = [i for i in new if i.refused]
        if refused:
            return _StepResult("REFUSED: " + "; ".join(f"{i.target}: {i.refused}" for i in refused))
        return _StepResult("done" if new else "nothing to do")

    async def _app(self, plan: ScenarioStepPlan) -> _StepResult:
        app_params, step = plan.app, plan.step
        assert app_params is not None
        assert step.user is not None
        email = step.user.lower()
        result = _StepResult()
        for spec in select_cars(self.specs, step.cars or ()):
            outcome = _AppOutcome(spec.vin)
            # The same request id on the retry: the cloud acts once even if the first attempt got through.
            request_id = app_params.request_id or self._apps[email].new_request_id()
            for attempt in range(2):
                client = self._apps[email]
                try:
                    if app_params.is_command:
                        outcome.command_id = await client.command(
                            spec.vin, app_params.op, app_params.params, app_params.spin, request_id=request_id
                        )
                        self._commands[outcome.command_id] = app_params.op
                    else:
                        params = {"vin": spec.vin, **(app_params.params or {})}
                        outcome.result = await client.request(app_params.op, params, request_id=request_id)
                except AppRequestError as exc:
                    outcome.error = exc
                except (AppConnectionError, AppTimeout) as exc:
                    if attempt == 0:  # the broker went away under the app: connect again, ask again
                        await self._reconnect_app(email)
                        continue
                    outcome.transport_error = str(exc)
                except AppTransportError as exc:
                    outcome.transport_error = str(exc)
                break
            result.apps.append(outcome)
        result.outcome = "; ".join(f"{o.vin}: {o.describe()}" for o in result.apps)
        return result

    async def _attacks(self, plan: ScenarioStepPlan, attacker: Attacker, state: StateDir) -> _StepResult:
        attack = plan.attack
        assert attack is not None
        assert self.faults is not None
        result = _StepResult()
        targets = select_cars(self.specs, plan.step.cars or ())
        for spec in targets:
            others = select_cars(self.specs, [attack.other]) if attack.other else []
            other = next((s.vin for s in others or self.specs if s.vin != spec.vin), None)
            try:
                async with asyncio.timeout(self.options.step_timeout_s):
                    if attack.kind.on_car:
                        outcome = await self._attack_car(spec.vin, attack.kind, attack.op, other, attacker, state)
                    else:
                        outcome = await self._attack_cloud(spec.vin, attack.kind, other, attacker, state)
            except TimeoutError:
                outcome = _AttackOutcome(spec.vin, attack.kind, None, True, "no answer in time")
            self.faults.record(spec.vin, f"attack {attack.kind.value}", "scenario", outcome.detail)
            result.attacks.append(outcome)
        result.outcome = "; ".join(o.describe() for o in result.attacks)
        return result

    async def _attack_car(
        self, vin: str, kind: AttackKind, op: str, other: str | None, attacker: Attacker, state: StateDir
    ) -> _AttackOutcome:
        assert self.fleet is not None
        session = self.fleet.sessions[vin]
        if kind is AttackKind.REPLAY:
            captured = self._wiretaps.get(vin, [])
            if not captured:
                return _AttackOutcome(vin, kind, None, True, "nothing captured to replay yet")
            token = captured[-1]
        else:
            forge = CommandForge(state.load_cloud_signing_key(), self.clock, op=op)
            token = forge.forge(kind, vin, session.seq.last_command_seq + 1, other_vin=other).encode()
        before = _car_state(session)
        rejected = Counter(session.stats.rejected_by_reason)
        await attacker.inject_command(vin, token)
        while True:
            moved = [r for r, n in session.stats.rejected_by_reason.items() if n > rejected.get(r, 0)]
            if moved or session.stats.commands_accepted > before[-1]:
                break
            await self._next_tick()
        observed = moved[0] if moved else "accepted"
        unchanged = _car_state(session) == before
        return _AttackOutcome(vin, kind, observed, unchanged, f"car answered {observed}")

    async def _attack_cloud(
        self, vin: str, kind: AttackKind, other: str | None, attacker: Attacker, state: StateDir
    ) -> _AttackOutcome:
        assert self._observer is not None
        captured = await attacker.latest_status(vin, timeout=self.options.step_timeout_s)
        claims = token_claims(captured)
        forge = StatusForge(self.clock)
        body = claims.get("body", {}) if isinstance(claims.get("body"), dict) else {}
        seq = int(claims.get("seq", 0)) + 1
        if kind is AttackKind.FORGED_STATUS:
            token = forge.forged(captured).encode()
        elif kind is AttackKind.REPLAYED_STATUS:
            token = captured
        elif kind is AttackKind.STATUS_WRONG_KEY:
            token = forge.wrong_key(vin, body, seq).encode()
        else:
            if other is None:
                return _AttackOutcome(vin, kind, None, True, "no other car whose key could be used")
            token = forge.other_car_key(vin, state.load_car_key(other), body, seq).encode()
        registry = self._registry
        before = await registry.get_vehicle_state(vin)
        self._observer.by_payload.pop(token, None)  # a replay is the same bytes as the original
        await attacker.inject_status(vin, token)
        while token not in self._observer.by_payload:
            await self._next_tick()
        outcome = self._observer.by_payload[token]
        applied, reason = outcome.applied, outcome.reason
        after = await registry.get_vehicle_state(vin)
        unchanged = not applied and before == after
        observed = "applied" if applied else (reason or "refused")
        return _AttackOutcome(vin, kind, observed, unchanged, f"cloud {observed}")

    # --- expectations ---------------------------------------------------------------------------------------
    async def _check(
        self, plan: ScenarioStepPlan, expectation: Expectation, result: _StepResult, at: float
    ) -> ExpectationResult:
        deadline = self.clock.monotonic() + expectation.within_s
        scale = min(self.options.time_scale, self.options.fast_scale)
        real_deadline = time.monotonic() + expectation.within_s / scale * 3 + 10
        started, real_started = self.clock.monotonic(), time.monotonic()
        while True:
            try:
                held, detail = await self._evaluate(plan, expectation, result)
            except _Settled as settled:
                held, detail = False, str(settled)
                break
            except Exception as exc:  # an expectation that cannot be judged fails; it must not end the run
                held, detail = False, f"could not check: {type(exc).__name__}: {exc}"
            if held or expectation.kind.immediate:
                break
            if self.clock.monotonic() >= deadline or time.monotonic() >= real_deadline:
                detail = f"not within {format_duration(expectation.within_s)}: {detail}"
                break
            await self._next_tick()
        return ExpectationResult(
            plan.index, plan.label, at, expectation.describe(), held, detail, self.clock.monotonic() - started,
            time.monotonic() - real_started,
        )

    def _cars_of(self, plan: ScenarioStepPlan, expectation: Expectation) -> list[CarSpec]:
        selectors = expectation.cars or plan.step.cars
        return select_cars(self.specs, selectors) if selectors else list(self.specs)

    async def _evaluate(
        self, plan: ScenarioStepPlan, expectation: Expectation, result: _StepResult
    ) -> tuple[bool, str]:
        kind, want = expectation.kind, expectation.value
        if kind in (ExpectKind.ERROR, ExpectKind.OK, ExpectKind.STATE):
            return await self._evaluate_app(expectation, result)
        if kind in (ExpectKind.REJECTED, ExpectKind.REFUSED):
            bad = [a.describe() for a in result.attacks if a.observed != str(want)]
            return not bad and bool(result.attacks), "; ".join(bad) or f"every target answered {want}"
        if kind is ExpectKind.UNCHANGED:
            bad = [a.describe() for a in result.attacks if not a.unchanged]
            return not bad and bool(result.attacks), "; ".join(bad) or "no state changed"
        assert self.fleet is not None
        assert self.faults is not None
        assert self._observer is not None
        registry = self._registry
        problems: list[str] = []
        for spec in self._cars_of(plan, expectation):
            session = self.fleet.sessions[spec.vin]
            since = dict(expectation.details).get("since")
            problem = await self._car_problem(kind, want, spec.vin, session, registry, since)
            if problem:
                problems.append(f"{spec.vin}: {problem}")
        return not problems, "; ".join(problems[:5]) + (" ..." if len(problems) > 5 else "") or "holds for every car"

    def _seq_at(self, vin: str, at: float) -> int:
        """The last seq car `vin` had signed at clock time `at` (since the start)."""
        marks = self._seq_marks.get(vin, [])
        index = bisect.bisect_right(marks, (at, math.inf)) - 1
        return marks[index][1] if index >= 0 else 0

    async def _car_problem(
        self, kind: ExpectKind, want: Any, vin: str, session: TcuSession, registry: Registry, since: float | None = None
    ) -> str:
        assert self.faults is not None
        assert self._observer is not None
        if kind is ExpectKind.ONLINE:
            cloud = await registry.get_vehicle_state(vin)
            cloud_online = cloud.online if cloud is not None else None
            # With the broker down nobody can tell the cloud: then only the TCU's side counts.
            cloud_can_know = bool(getattr(self.broker, "running", True))
            if session.online != want or (cloud_can_know and cloud_online != want):
                return f"TCU {'online' if session.online else 'offline'}, cloud says {cloud_online}"
            return ""
        if kind in (ExpectKind.DELIVERED, ExpectKind.APPLIED_ONCE):
            applied = self._observer.applied[vin]
            twice = sorted(s for s, n in Counter(applied).items() if n > 1)
            if twice:
                return f"applied twice: seq {twice[:10]}"
            if kind is ExpectKind.APPLIED_ONCE:
                return ""
            first = self._seq_at(vin, since) + 1 if since is not None else 1
            issued = set(range(first, session.seq.last_issued + 1))
            missing = sorted(issued - set(applied))
            if missing:
                return f"{len(missing)} of {len(issued)} not applied (seq {missing[:10]}), outbox {len(session.outbox)}"
            return ""
        if kind is ExpectKind.LOCKED:
            return "" if session.vehicle.locked == want else f"locked is {session.vehicle.locked}"
        if kind is ExpectKind.OUTBOX_MIN:
            return "" if len(session.outbox) >= want else f"outbox {len(session.outbox)}"
        if kind is ExpectKind.OUTBOX_MAX:
            return "" if len(session.outbox) <= want else f"outbox {len(session.outbox)}"
        if kind is ExpectKind.IN_ZONE:
            car = self.faults.cars.get(vin)
            zone = car.zone.name if car is not None and car.zone is not None else None
            return "" if zone == want else f"in zone {zone!r}"
        if kind is ExpectKind.CLOUD_REFUSED:
            count = self._observer.refused[vin][str(want)]
            return "" if count else f"nothing refused as {want} (refused: {dict(self._observer.refused[vin])})"
        if kind is ExpectKind.ALERTS:
            fired = self._observer.alerts[vin]
            counted = {name: fired[name] for name in want}
            return "" if counted == want else f"alerts fired: {dict(fired) or 'none'}"
        if kind is ExpectKind.TRIPS_MIN:
            trips = len(await registry.list_trips(vin, limit=want))
            return "" if trips >= want else f"the cloud keeps {trips} trip(s)"
        state = await registry.get_vehicle_state(vin)
        status = state.status if state is not None else None
        if status is None:
            return "the cloud has no status"
        wrong = []
        for path, value in want.items():
            seen: Any = status
            for part in path.split("."):
                seen = seen.get(part) if isinstance(seen, dict) else None
            if seen != value:
                wrong.append(f"{path} is {seen!r}")
        return ", ".join(wrong)

    async def _evaluate_app(self, expectation: Expectation, result: _StepResult) -> tuple[bool, str]:
        kind, want = expectation.kind, expectation.value
        details = dict(expectation.details)
        final_mismatch = False
        if not result.apps:
            return False, "the step sent no request"
        problems = []
        for outcome in result.apps:
            if kind is ExpectKind.OK:
                if outcome.error is not None or outcome.transport_error is not None:
                    problems.append(f"{outcome.vin}: {outcome.describe()}")
            elif kind is ExpectKind.ERROR:
                error = outcome.error
                if error is None or error.code != want:
                    problems.append(f"{outcome.vin}: {outcome.describe()}")
                    continue
                for name, value in details.items():
                    if getattr(error, name, None) != value:
                        problems.append(f"{outcome.vin}: {name} is {getattr(error, name, None)}")
            else:
                if outcome.command_id is None:
                    problems.append(f"{outcome.vin}: no command ({outcome.describe()})")
                    continue
                record = await self._registry.get_command(outcome.command_id)
                state = record.state if record is not None else None
                reason = record.reason if record is not None else None
                if state != want or ("reason" in details and reason != details["reason"]):
                    problems.append(f"{outcome.vin}: command {outcome.command_id} is {state} (reason {reason})")
                    if state is not None and state.is_final:
                        final_mismatch = True  # final states never change: no use waiting
        if final_mismatch:
            raise _Settled("; ".join(problems))
        return not problems, "; ".join(problems) or f"{len(result.apps)} request(s) as expected"

    # --- the report -----------------------------------------------------------------------------------------
    async def _car_summaries(self) -> list[CarSummary]:
        if self.fleet is None or self.faults is None or self._observer is None:
            return []
        out = []
        for spec in self.specs:
            session = self.fleet.sessions[spec.vin]
            car = self.faults.cars.get(spec.vin)
            out.append(
                CarSummary(
                    vin=spec.vin,
                    group=spec.group,
                    online=session.online,
                    connects=session.stats.connects,
                    disconnects=session.stats.disconnects,
                    published=session.stats.published,
                    seq_issued=session.seq.last_issued,
                    applied_by_cloud=len(self._observer.applied[spec.vin]),
                    refused_by_cloud=dict(self._observer.refused[spec.vin]),
                    outbox=len(session.outbox),
                    outbox_peak=self._outbox_peak[spec.vin],
                    outbox_dropped=session.outbox.dropped,
                    commands_accepted=session.stats.commands_accepted,
                    commands_rejected=dict(session.stats.rejected_by_reason),
                    drops=car.drops if car is not None else 0,
                    zone_entries=car.zone_entries if car is not None else 0,
                    signal_pct=session.signal_pct,
                )
            )
        return out

    async def _cloud_summary(self) -> CloudSummary | None:
        if self._handler is None:
            return None
        commands = {}
        for command_id in self._commands:
            record = await self._registry.get_command(command_id)
            commands[command_id] = record.state.value if record is not None else "?"
        return CloudSummary(self._handler.stats.as_dict(), commands)


class _Settled(Exception):
    """The expectation can no longer come true (a command reached another final state)."""


def _car_state(session: TcuSession) -> tuple[int, bool, int, int]:
    """What an attack on a car must not change: the vehicle, the accepted command seq, executed commands."""
    vehicle = session.vehicle
    return (vehicle.revision, vehicle.locked, session.seq.last_command_seq, session.stats.commands_accepted)
