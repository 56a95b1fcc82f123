"""The full round trip (SPEC P2): app → cloud (session, S-PIN, rights, rate limit, signing) → car → result →
cloud → app push, with the cloud as its own process (`tcu-sim cloud run`) and the fleet as another.

Set-up goes through the same app API a person uses: each bench app user registers, reads the verification
mail from the simulated mailbox, logs in, adds one car of the running fleet, and the car is enrolled by the
in-car step done at the car (a simulator control published as the operator) — the steps of `tcu_sim.onboard`,
eight users at a time. Then `lock` / `unlock`
commands (both need the S-PIN) go out at a fixed rate, cycling over the users so that no user exceeds the
cloud's per-user command rate limit; a command's time runs from the app's request until the app receives the
`succeeded` push event.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt

from broker.mosquitto import MosquittoBroker
from tcu_sim.app import AppClient, AppProtocolError, CommandInfo
from tcu_sim.bench._commands import RoundTrips
from tcu_sim.bench._procs import ChildProcess, tcu_sim_command
from tcu_sim.fleet import StateDir
from tcu_sim.onboard import enrol, sign_up, wait_enrolled
from tcu_sim.protocol import CommandState, ControlMessage, PushEventType, Topics, encode_json

__all__ = ["AppRig", "CloudProcess", "app_round_trips", "bench_app_users", "connected_apps", "enrol_users"]

SPIN = "4711"
PASSWORD = "bench-password-2026"  # noqa: S105  # a throw-away account of the bench's own test cloud


def bench_app_users(count: int) -> list[str]:
    """The app logins the bench broker is started with."""
    return [f"bench-app-{i:03d}" for i in range(count)]


class CloudProcess(ChildProcess):
    """`tcu-sim cloud run` against the bench broker, with its registry in `db` (a fresh SQLite file) and its log
    next to it."""

    def __init__(self, broker: MosquittoBroker, state: StateDir, db: Path) -> None:
        super().__init__(
            "cloud",
            [
                *tcu_sim_command(), "cloud", "run",
                "--broker", f"mqtts://{broker.host}:{broker.port}",
                "--state", str(state.root),
                "--db", f"sqlite://{db.absolute()}",
                "--client-id", "cloud",
            ],
            log_path=db.with_suffix(".log"),
        )

    async def wait_ready(self, timeout: float) -> None:
        """Wait for the cloud's "connected and subscribed" line."""
        await self.wait_for_line(r"connected and subscribed", timeout)

    async def wait_idle(
        self, *, below_core: float = 0.35, window_s: float = 1.0, quiet_windows: int = 3, timeout: float = 180.0
    ) -> float:
        """Wait until the cloud has worked through its start-up backlog (every car's retained status and
        connection message): its CPU stays below `below_core` for `quiet_windows` windows of `window_s` in a
        row (one quiet second can fall between its subscribing and the flood). While it works through the
        backlog it takes a whole core; 10,000 cars' steady traffic alone keeps it near 0.1 to 0.2 core.
        Returns the seconds waited."""
        process = self.psutil()
        started = time.monotonic()
        quiet = 0
        while quiet < quiet_windows and time.monotonic() - started < timeout:
            before = process.cpu_times()
            await asyncio.sleep(window_s)
            after = process.cpu_times()
            busy = (after.user + after.system - before.user - before.system) / window_s
            quiet = quiet + 1 if busy < below_core else 0
        return time.monotonic() - started


@dataclass(slots=True)
class AppRig:
    """Bench app users, each logged in with one enrolled car."""

    apps: list[AppClient]
    vins: list[str]
    setup_s: float = 0.0
    finals: dict[str, tuple[float, CommandState]] = field(default_factory=dict)
    waiters: dict[str, asyncio.Future[tuple[float, CommandState]]] = field(default_factory=dict)


@contextlib.asynccontextmanager
async def connected_apps(broker: MosquittoBroker, users: Sequence[str]) -> AsyncIterator[list[AppClient]]:
    """One connected `AppClient` per bench user, on the broker's app listener."""
    if broker.app_port is None:
        raise RuntimeError("the bench broker has no app listener")
    async with contextlib.AsyncExitStack() as stack:
        apps = []
        for i, user in enumerate(users):
            app = AppClient(
                broker.host, broker.app_port, user, broker.app_password(user),
                tls_context=broker.ssl_context(None) if broker.app_tls else None,
                timeout=30.0, rng=random.Random(i), events_queue_size=4096,
            )
            apps.append(await stack.enter_async_context(app))
        yield apps


async def enrol_users(
    broker: MosquittoBroker, apps: Sequence[AppClient], vins: Sequence[str], *, timeout: float = 60.0
) -> AppRig:
    """Give every app user an account (verified through the simulated mailbox) and one enrolled car."""
    topics = Topics()
    started = time.monotonic()
    async with broker.client(
        "operator", identifier="bench-operator", protocol=aiomqtt.ProtocolVersion.V311, timeout=10
    ) as operator:
        gate = asyncio.Semaphore(8)

        async def at_the_car(vin: str, message: ControlMessage) -> None:
            # The in-car step, done by a person at the car: the operator publishes the simulator control.
            await operator.publish(topics.control(vin), encode_json(message.model_dump(mode="json")), qos=1)

        async def one(app: AppClient, vin: str) -> None:
            async with gate:
                await sign_up(app, f"{app.client_id}@bench.tcu-sim.test", PASSWORD, SPIN)
                await enrol(app, vin, at_the_car)
            if await wait_enrolled(app, {vin}, timeout):
                raise TimeoutError(f"{vin}: the cloud did not confirm the enrolment within {timeout:g} s")

        async with asyncio.TaskGroup() as tg:
            for app, vin in zip(apps, vins, strict=True):
                tg.create_task(one(app, vin), name=f"bench.enrol[{vin}]")
    return AppRig(list(apps), list(vins), setup_s=time.monotonic() - started)


async def app_round_trips(
    rig: AppRig, *, rate_per_s: float, count: int, result_timeout_s: float = 15.0, warmup: bool = True
) -> RoundTrips:
    """Send `count` lock/unlock commands at `rate_per_s`, cycling over the rig's users; time each from the
    request until the app's final push event."""
    out = RoundTrips()
    loop = asyncio.get_running_loop()

    def final_seen(command_id: str, state: CommandState) -> None:
        at = time.perf_counter()
        waiter = rig.waiters.pop(command_id, None)
        if waiter is not None:
            if not waiter.done():
                waiter.set_result((at, state))
        else:
            rig.finals[command_id] = (at, state)  # the push beat the reply to the request

    async def consume(app: AppClient) -> None:
        async for event in app.events():
            if event.type != PushEventType.COMMAND_PROGRESS:
                continue
            try:
                info = CommandInfo.from_result(event.data)
            except AppProtocolError:
                continue
            if info.state.is_final:
                final_seen(info.command_id, info.state)

    async def one(app: AppClient, vin: str, op: str) -> tuple[float, CommandState] | None:
        sent = time.perf_counter()
        try:
            command_id = await app.command(vin, op, spin=SPIN)
        except Exception as exc:  # any refusal is an outcome to count, not a crash of the bench
            out.outcomes[f"refused:{type(exc).__name__}"] += 1
            return None
        final = rig.finals.pop(command_id, None)
        if final is None:
            waiter: asyncio.Future[tuple[float, CommandState]] = loop.create_future()
            rig.waiters[command_id] = waiter
            try:
                async with asyncio.timeout(result_timeout_s):
                    final = await waiter
            except TimeoutError:
                rig.waiters.pop(command_id, None)
                out.lost += 1
                return None
        at, state = final
        out.outcomes[state.value] += 1
        return (at - sent, state)

    consumers = [asyncio.create_task(consume(app), name=f"bench.app[{app.client_id}].events") for app in rig.apps]
    try:
        ops = ["lock"] * len(rig.apps)
        if warmup:  # first request of each user: sessions and caches warm, not measured
            await asyncio.gather(*(one(app, vin, "lock") for app, vin in zip(rig.apps, rig.vins, strict=True)))
            out.outcomes.clear()
        tasks: list[asyncio.Task[tuple[float, CommandState] | None]] = []
        started = time.perf_counter()
        for i in range(count):
            delay = started + i / rate_per_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            user = i % len(rig.apps)
            ops[user] = "unlock" if ops[user] == "lock" else "lock"
            tasks.append(asyncio.create_task(one(rig.apps[user], rig.vins[user], ops[user])))
            out.sent += 1
        out.send_s = time.perf_counter() - started
        for result in await asyncio.gather(*tasks):
            if result is not None and result[1] is CommandState.SUCCEEDED:
                out.rtts_s.append(result[0])
    finally:
        for task in consumers:
            task.cancel()
        await asyncio.gather(*consumers, return_exceptions=True)
    return out

