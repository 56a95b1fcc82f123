"""SPEC P3 measured end to end: signed statuses from many cars, through a real Mosquitto, verified and applied by
ONE cloud process (the `CloudHandler` that `broker.runtime` builds), none lost.

    result = await measure_status_throughput(messages=20_000, cars=1_000, registry_url="sqlite:///tmp/p3.db")
    print(result.summary())

or from a shell (a scratch PostgreSQL database is created and dropped with `--db postgresql`):

    .venv/bin/python -m tcu_sim.bench._p3 --messages 20000 --cars 1000 --db sqlite
    .venv/bin/python -m tcu_sim.bench._p3 --db postgresql --pg-admin postgresql://postgres@127.0.0.1:5432/postgres
    .venv/bin/python -m tcu_sim.bench._p3 --config '{"verify_processes": 2}' --json
    .venv/bin/python -m tcu_sim.bench._p3 --db postgresql --processes 2   # the cloud N-way (issue 17)

How it runs (nothing of the set-up is timed):
1. A fleet of `cars` keys and factory records; `messages` statuses signed beforehand, round robin over the cars,
   each car's `seq` and `updated_at` growing (so the newest status per car is known).
2. A Mosquitto (`MosquittoBroker`) with the project's generated configuration (mutual TLS, ACLs;
   `max_inflight_messages` as in production) but an unbounded queue for offline sessions, plus a `p3-feeder`
   identity allowed to publish on `tcu/+/status` (publishing from 1,000 separate car connections would measure
   the feeder, not the cloud).
3. The cloud — registry and services from `broker.runtime.open_services`, a handler from `cloud_handler` (two in
   turn over the one registry) — connects once to create its persistent session and subscriptions, and leaves.
   The feeder publishes every status (QoS 1) — plus `duplicates` copies of already published ones, as a
   redelivery would bring them — and Mosquitto queues them for the cloud's session.
4. The clock starts, the cloud connects again and drains the queue; the clock stops when its counters show every
   message applied or refused as a duplicate. That is the cloud's own rate: the broker only hands over what it
   holds, and no publisher competes for the CPU.
5. "None lost": applied + duplicates == published, no other refusal, no handler error, no dropped message, and
   the registry holds, for every car, the newest status it sent.

Besides the wall-clock rate it reports CPU figures, which say more on a shared or slower machine: messages per
CPU second of the whole cloud (verification workers included), per CPU second of the event loop's thread alone
(the ceiling of one process whatever the cores: the loop cannot spread over them), and the loop's cost per
message in bare Ed25519 verifications timed on the same machine just before (1.0 = the signature check alone).
`HandlerConfig(verify_processes=N)` moves verification off the loop into N worker processes.

`processes=N` (`--processes N`) drains with N cloud processes instead of one — child processes of the bench, each
a handler with its own identity (`cloud`, `cloud-2`, ...) and MQTT 5 shared subscriptions, as N `tcu-sim cloud run
--shared-subscriptions` would: Mosquitto splits the queue between their sessions round robin, and they apply over
the one registry (use PostgreSQL: SQLite serialises the writers). The clock runs from the first process's start of
its drain to the last message any of them handled; `cpu_seconds` and `loop_cpu_seconds` add up the processes
(the P3 figure of the N-way is the ratio of the rates with 2 and with 1 process).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

from broker.cloud import PasswordHasher, ServerSecret
from broker.handler import CloudHandler, HandlerConfig, HandlerStats
from broker.mosquitto import AclPolicy, Grant, GrantAccess, MosquittoBroker
from broker.pki import CLOUD as CLOUD_IDENTITY
from broker.pki import FleetPKI
from broker.registry import Registry, VehicleRecord
from broker.runtime import BrokerLogin, CloudKeys, cloud_handler, open_services
from tcu_sim.clock import SystemClock
from tcu_sim.logging import configure_logging
from tcu_sim.protocol import CLOUD, KeySet, MessageType, Signer, SigningKey, Topics, generate_vin

__all__ = ["StatusThroughput", "measure_status_throughput", "scratch_postgres"]

FEEDER = "p3-feeder"
_CAR_KIDS_SEED = 20_260_301


@dataclass(frozen=True, slots=True)
class StatusThroughput:
    """What one P3 run measured and checked."""

    backend: str
    messages: int
    duplicates: int
    cars: int
    seconds: float
    applied: int
    refused_duplicate: int
    refused_other: dict[str, int]
    handler_errors: int
    dropped_incoming: int
    newest_stored: int
    """Cars whose stored last status is the newest one they sent."""
    batches: int = 0
    """Registry transactions the statuses were applied in."""
    cpu_seconds: float = 0.0
    """CPU time of the cloud process (all its threads) while it drained: on a shared machine the wall-clock rate
    depends on what else runs, the rate per CPU second much less."""
    loop_cpu_seconds: float = 0.0
    """CPU time of the event loop's thread alone: the part that cannot spread over cores (the GIL)."""
    worker_cpu_seconds: float = 0.0
    """CPU time of the verification worker processes (`verify_processes`), not in `cpu_seconds`."""
    verify_us: float = 0.0
    """One bare Ed25519 verification (cryptography), timed on the same machine just before the drain: the unit
    that makes runs on a busy or a slower machine comparable."""
    config: dict[str, Any] = field(default_factory=dict)
    processes: int = 1
    """Cloud processes that drained the queue together (shared subscriptions)."""

    @property
    def published(self) -> int:
        """Every message the feeder published (statuses and their duplicates)."""
        return self.messages + self.duplicates

    @property
    def per_second(self) -> float:
        """Messages verified and applied or refused as duplicates, per second."""
        return (self.applied + self.refused_duplicate) / self.seconds if self.seconds > 0 else 0.0

    @property
    def per_cpu_second(self) -> float:
        """Messages per CPU second of the cloud process: its rate on a core of its own."""
        done = self.applied + self.refused_duplicate
        return done / self.cpu_seconds if self.cpu_seconds > 0 else 0.0

    @property
    def per_total_cpu_second(self) -> float:
        """Messages per CPU second of the cloud, its verification workers included."""
        done = self.applied + self.refused_duplicate
        total = self.cpu_seconds + self.worker_cpu_seconds
        return done / total if total > 0 else 0.0

    @property
    def per_loop_cpu_second(self) -> float:
        """Messages per CPU second of the event loop's thread: the ceiling of this process on any machine."""
        done = self.applied + self.refused_duplicate
        return done / self.loop_cpu_seconds if self.loop_cpu_seconds > 0 else 0.0

    @property
    def loop_cost_in_verifies(self) -> float:
        """The loop thread's CPU per message, in bare Ed25519 verifications (1.0 would be the signature alone)."""
        done = self.applied + self.refused_duplicate
        if not done or not self.verify_us:
            return 0.0
        return self.loop_cpu_seconds / done * 1e6 / self.verify_us

    @property
    def lost(self) -> int:
        """Published messages the cloud neither applied nor refused as a duplicate."""
        return self.published - self.applied - self.refused_duplicate

    @property
    def none_lost(self) -> bool:
        """Every message accounted for, nothing else refused or failed, every car's newest status stored."""
        return (
            self.lost == 0
            and self.applied == self.messages
            and not self.refused_other
            and self.handler_errors == 0
            and self.dropped_incoming == 0
            and self.newest_stored == self.cars
        )

    def summary(self) -> str:
        """One line for a report."""
        verdict = "none lost" if self.none_lost else f"LOST/WRONG: {self.as_dict()}"
        return (
            f"P3 {self.backend}, {self.processes} cloud process{'es' if self.processes > 1 else ''}:"
            f" {self.per_second:,.0f} statuses/s, {self.per_total_cpu_second:,.0f} per CPU second,"
            f" {self.per_loop_cpu_second:,.0f} per loop-thread CPU second ({self.published} msgs from {self.cars}"
            f" cars in {self.seconds:.2f} s, {self.cpu_seconds + self.worker_cpu_seconds:.2f} s CPU"
            f" ({self.worker_cpu_seconds:.2f} s in verify workers), {self.loop_cpu_seconds:.2f} s loop;"
            f" applied {self.applied}, duplicates {self.refused_duplicate}, {self.batches} batches;"
            f" loop cost {self.loop_cost_in_verifies:.2f} verifies of {self.verify_us:.0f} us); {verdict}"
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly, with the derived figures."""
        data = asdict(self)
        data.update(
            per_second=round(self.per_second, 1), per_cpu_second=round(self.per_cpu_second, 1),
            per_loop_cpu_second=round(self.per_loop_cpu_second, 1),
            per_total_cpu_second=round(self.per_total_cpu_second, 1),
            loop_cost_in_verifies=round(self.loop_cost_in_verifies, 3), lost=self.lost,
            none_lost=self.none_lost,
        )
        return data


# -- fleet and messages --------------------------------------------------------------------------------------
def status_body(at: float, n: int) -> dict[str, Any]:
    """A plausible status body of a parked car, updated at `at` (`n` varies the odometer)."""
    door = {"open": False, "locked": True}
    return {
        "updated_at": at,
        "connection": {"online": True, "signal_pct": 80},
        "privacy_mode": "off",
        "ignition": "off",
        "moving": False,
        "locked": True,
        "doors": {d: door for d in ("front_left", "front_right", "rear_left", "rear_right", "trunk", "hood")},
        "windows": {w: "closed" for w in ("front_left", "front_right", "rear_left", "rear_right")},
        "lights": "off",
        "parking_position": {"lat": 41.39, "lon": 2.17, "parked_at": at - 60},
        "aux_heating": {"state": "off", "remaining_min": 0, "target_temperature_c": None},
        "battery_12v_v": 12.6,
        "fuel_level_pct": 60.0,
        "range_km": 500.0,
        "odometer_km": 12_000.0 + n,
        "health": {"warnings": [], "inspection_due_days": 200, "oil_service_due_km": 9000},
    }


@dataclass(slots=True)
class _Fleet:
    records: list[VehicleRecord]
    keys: KeySet
    #: (vin, token) in publishing order.
    messages: list[tuple[str, bytes]]
    #: vin -> (last seq, updated_at of the newest status).
    newest: dict[str, tuple[int, float]]


def _make_fleet(cars: int, messages: int, now: float, rng: random.Random) -> _Fleet:
    clock = SystemClock()
    vins: list[str] = []
    seen: set[str] = set()
    while len(vins) < cars:
        vin = generate_vin(rng)
        if vin not in seen:
            seen.add(vin)
            vins.append(vin)
    signers = {vin: Signer(SigningKey.generate(vin), vin, clock, ttl_s=3600) for vin in vins}
    records = [VehicleRecord(vin, "leon", "media_system", now - 100 * 86_400, "p3") for vin in vins]
    out: list[tuple[str, bytes]] = []
    newest: dict[str, tuple[int, float]] = {}
    for n in range(messages):
        vin = vins[n % cars]
        seq = n // cars + 1
        at = now - messages + n  # grows per car
        body = status_body(at, n)
        out.append((vin, signers[vin].sign(MessageType.STATUS, aud=CLOUD, seq=seq, body=body).encode()))
        newest[vin] = (seq, at)
    keys = KeySet(s.key.public_key() for s in signers.values())
    return _Fleet(records, keys, out, newest)


# -- the broker ----------------------------------------------------------------------------------------------
class _Broker(MosquittoBroker):
    """Mosquitto with the generated configuration (mutual TLS, ACLs, no app listener, no persistence), queues
    unbounded for the cloud's offline session, `max_inflight_messages` as given, and the feeder's grant."""

    def __init__(self, directory: Path, *, max_inflight: int) -> None:
        super().__init__(
            directory / "mosquitto", FleetPKI(directory / "pki"), app_port=None, persistence=False,
            policy=AclPolicy(named={FEEDER: (Grant(GrantAccess.WRITE, "tcu/+/status"),)}),
            log_types=("error", "warning", "information"),  # "information" carries the readiness line
        )
        self.max_inflight = max_inflight

    def _write_config(self) -> None:
        super()._write_config()
        limits = {"max_queued_messages": "0", "max_inflight_messages": str(self.max_inflight)}
        lines = self.files.config.read_text(encoding="utf-8").splitlines()
        out = [f"{key} {limits[key]}" if (key := line.partition(" ")[0]) in limits else line for line in lines]
        self.files.config.write_text("\n".join(out) + "\n", encoding="utf-8")


async def _feed(broker: _Broker, topics: Topics, messages: list[tuple[str, bytes]], *, retain: bool) -> None:
    """Publish every message QoS 1, many in flight at once."""
    async with aiomqtt.Client(
        broker.host, broker.port, identifier=FEEDER, tls_context=broker.ssl_context(FEEDER),
        protocol=aiomqtt.ProtocolVersion.V5, timeout=30, max_inflight_messages=1000,
    ) as client:
        client.pending_calls_threshold = 1_000_000  # many publishes in flight is the point here
        chunk = 500
        for start in range(0, len(messages), chunk):
            await asyncio.gather(
                *(client.publish(topics.status(vin), token, qos=1, retain=retain)
                  for vin, token in messages[start : start + chunk])
            )


# -- the measurement -----------------------------------------------------------------------------------------
async def measure_status_throughput(
    *,
    messages: int = 20_000,
    cars: int = 1_000,
    registry_url: str | None = None,
    workdir: Path | None = None,
    config: HandlerConfig | None = None,
    duplicates: int = 0,
    retain: bool = False,
    max_inflight: int = 20,
    timeout_s: float = 600.0,
    seed: int = _CAR_KIDS_SEED,
    progress: Callable[[str], None] | None = None,
    processes: int = 1,
) -> StatusThroughput:
    """Publish `messages` signed statuses from `cars` cars (plus `duplicates` redelivered copies) to a real
    Mosquitto and time one cloud process (or `processes` of them) applying them all (see the module docstring).
    `registry_url` defaults to a SQLite file in the work directory; `max_inflight` is Mosquitto's
    `max_inflight_messages` (production: 20). Raises TimeoutError when the cloud has not accounted for every
    message within `timeout_s`."""
    say = progress or (lambda _text: None)
    if messages < cars or cars < 1:
        raise ValueError("need at least one message per car")
    if not 1 <= processes <= len(_IDENTITIES):
        raise ValueError(f"processes must be 1 to {len(_IDENTITIES)} (one cloud identity each)")
    own_dir = workdir is None
    root = Path(tempfile.mkdtemp(prefix="tcu-sim-p3-")) if workdir is None else workdir
    root.mkdir(parents=True, exist_ok=True)
    url = registry_url or f"sqlite://{root / 'p3.db'}"
    cfg = config or HandlerConfig(client_id="cloud-p3", session_expiry_s=3600)
    if cfg.session_expiry_s == 0:
        raise ValueError("the cloud needs a persistent session (session_expiry_s > 0) to have its queue kept")
    if processes > 1:
        cfg = cfg.model_copy(update={"shared_subscriptions": True, "protocol": "5"})
    rng = random.Random(seed)
    clock = SystemClock()
    try:
        say(f"signing {messages} statuses of {cars} cars")
        fleet = _make_fleet(cars, messages, clock.now(), rng)
        copies = [fleet.messages[rng.randrange(len(fleet.messages))] for _ in range(duplicates)]
        topics = Topics(cfg.topic_prefix)
        secret_bytes = secrets.token_bytes(32)
        secret = ServerSecret(secret_bytes)
        async with (
            _Broker(root, max_inflight=max_inflight) as broker,
            open_services(
                url, clock=clock, secret=secret, vehicles=fleet.records, passwords=PasswordHasher.for_tests()
            ) as services,
        ):
            registry = services.registry
            login = BrokerLogin(broker.host, broker.port, tls_context=broker.ssl_context(CLOUD_IDENTITY))
            keys = CloudKeys(SigningKey.generate("cloud-1"), fleet.keys, secret)

            def handler() -> CloudHandler:
                return cloud_handler(services, cfg, login, keys=keys)

            total = messages + duplicates
            if processes > 1:
                verify_us = _verify_cost_us()
                children = _Children(broker, root / "pki", url, cfg, fleet.keys, secret_bytes, processes)
                async with children:
                    await children.make_sessions()
                    say(f"publishing {total} messages for the {processes} cloud processes' sessions")
                    await _feed(broker, topics, fleet.messages + copies, retain=retain)
                    say(f"{processes} cloud processes draining their queues")
                    drained = await children.drain(total, timeout_s)
                newest_stored = await _count_newest(registry, fleet.newest)
                return drained.result(
                    backend=registry.dialect, messages=messages, duplicates=duplicates, cars=cars,
                    newest_stored=newest_stored, verify_us=verify_us, processes=processes,
                    config=_config_figures(cfg, max_inflight, retain),
                )
            async with handler() as first:  # creates the persistent session and its subscriptions
                await first.wait_ready(30)
            say(f"publishing {messages + duplicates} messages for the cloud's session")
            await _feed(broker, topics, fleet.messages + copies, retain=retain)

            def done(s: HandlerStats) -> bool:
                return s.applied["status"] + sum(s.refused.values()) + s.handler_errors >= total

            verify_us = _verify_cost_us()
            say("cloud draining its queue")
            async with handler() as cloud:
                # Timed from here: the verify workers (if any) are up, the connection not yet made.
                started, cpu_started, loop_started = time.perf_counter(), time.process_time(), time.thread_time()
                workers = _worker_cpu(cloud)
                await cloud.wait_for(done, timeout_s)
                seconds = time.perf_counter() - started
                cpu_seconds = time.process_time() - cpu_started
                loop_cpu_seconds = time.thread_time() - loop_started
                worker_cpu_seconds = _worker_cpu(cloud) - workers
                stats = cloud.stats
            newest_stored = await _count_newest(registry, fleet.newest)
            refused = dict(stats.refused)
            return StatusThroughput(
                backend=registry.dialect,
                messages=messages,
                duplicates=duplicates,
                cars=cars,
                seconds=seconds,
                applied=stats.applied["status"],
                refused_duplicate=refused.pop("duplicate", 0),
                refused_other=refused,
                handler_errors=stats.handler_errors,
                dropped_incoming=stats.dropped_incoming,
                newest_stored=newest_stored,
                batches=getattr(stats, "status_batches", 0),  # getattr: also measures older handlers
                cpu_seconds=cpu_seconds,
                loop_cpu_seconds=loop_cpu_seconds,
                worker_cpu_seconds=worker_cpu_seconds,
                verify_us=verify_us,
                config=_config_figures(cfg, max_inflight, retain),
            )
    finally:
        if own_dir:
            shutil.rmtree(root, ignore_errors=True)


def _config_figures(cfg: HandlerConfig, max_inflight: int, retain: bool) -> dict[str, Any]:
    return {
        "car_workers": cfg.car_workers,
        "max_inflight_messages": max_inflight,
        "protocol": cfg.protocol,
        "retain": retain,
        "shared_subscriptions": cfg.shared_subscriptions,
        "verify_processes": getattr(cfg, "verify_processes", 0),
        **{k: v for k, v in cfg.model_dump().items() if k.startswith("car_batch")},
    }


# -- several cloud processes (the N-way) ---------------------------------------------------------------------
_IDENTITIES = ("cloud", *(f"cloud-{i}" for i in range(2, 9)))  # the cloud identities of the broker's ACL


@dataclass(slots=True)
class _Drained:
    """What the cloud processes reported, added up."""

    seconds: float
    stats: dict[str, Any]

    def result(self, **fields: Any) -> StatusThroughput:
        s = self.stats
        refused = dict(s["refused"])
        return StatusThroughput(
            seconds=self.seconds, applied=s["applied"], refused_duplicate=refused.pop("duplicate", 0),
            refused_other=refused, handler_errors=s["handler_errors"], dropped_incoming=s["dropped_incoming"],
            batches=s["status_batches"], cpu_seconds=s["cpu"], loop_cpu_seconds=s["loop_cpu"],
            worker_cpu_seconds=s["worker_cpu"], **fields,
        )


class _Children:
    """N cloud processes (`python -m tcu_sim.bench._p3 --child`), each told its part over stdin as one JSON line
    (the server secret included: never on a command line) and reporting JSON lines on stdout."""

    def __init__(
        self, broker: _Broker, pki: Path, registry_url: str, cfg: HandlerConfig, keys: KeySet, secret: bytes, n: int
    ) -> None:
        self._jobs = []
        for identity in _IDENTITIES[:n]:
            broker.pki.ensure(identity)
            self._jobs.append({
                "registry_url": registry_url, "host": broker.host, "port": broker.port,
                "pki": str(pki), "identity": identity,
                "config": cfg.model_copy(update={"client_id": identity}).model_dump(),
                "jwks": keys.to_jwks(), "secret": secret.hex(),
            })
        self._procs: list[asyncio.subprocess.Process] = []
        self._latest: list[dict[str, Any]] = [{} for _ in self._jobs]

    async def __aenter__(self) -> _Children:
        for job in self._jobs:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tcu_sim.bench._p3", "--child", stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            self._procs.append(proc)
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(job).encode() + b"\n")
            await proc.stdin.drain()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for proc in self._procs:
            if proc.returncode is None and proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.write(b"stop\n")
                    proc.stdin.close()
        for proc in self._procs:
            try:
                async with asyncio.timeout(30):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()

    async def _line(self, index: int, timeout: float) -> dict[str, Any]:
        stdout = self._procs[index].stdout
        assert stdout is not None
        async with asyncio.timeout(timeout):
            raw = await stdout.readline()
        if not raw:
            raise RuntimeError(f"cloud process {self._jobs[index]['identity']} ended early")
        data: dict[str, Any] = json.loads(raw)
        return data

    async def make_sessions(self) -> None:
        """Each process connects once (its persistent session and shared subscriptions) and leaves."""
        for index in range(len(self._procs)):
            if (await self._line(index, 60)).get("state") != "sessions":
                raise RuntimeError("unexpected answer of a cloud process")

    async def drain(self, total: int, timeout: float) -> _Drained:
        """Let them drain; the wall clock from the first start to the last message handled by any of them."""
        for proc in self._procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()

        async def follow(index: int) -> None:
            while True:
                self._latest[index] = await self._line(index, timeout)
                if self._done() >= total:
                    return

        async with asyncio.timeout(timeout):
            tasks = [asyncio.create_task(follow(i)) for i in range(len(self._procs))]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        started = min(r["started"] for r in self._latest)
        ended = max(r["last_handled"] for r in self._latest)
        summed: dict[str, Any] = {"refused": {}}
        for report in self._latest:
            for key, value in report["stats"].items():
                if key == "refused":
                    for reason, n in value.items():
                        summed["refused"][reason] = summed["refused"].get(reason, 0) + n
                else:
                    summed[key] = summed.get(key, 0) + value
        return _Drained(ended - started, summed)

    def _done(self) -> int:
        return sum(r["stats"]["handled"] for r in self._latest if r)


async def _child(job: dict[str, Any]) -> None:
    """One cloud process of the N-way (see `_Children`): sessions, then drain on "go" until "stop"."""
    cfg = HandlerConfig(**job["config"])
    login = BrokerLogin(job["host"], job["port"], tls_context=FleetPKI(Path(job["pki"])).client_ssl_context(
        job["identity"]))
    secret = ServerSecret(bytes.fromhex(job["secret"]))
    keys = CloudKeys(SigningKey.generate(job["identity"]), KeySet.from_jwks(job["jwks"]), secret)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)

    def say(data: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(data) + "\n")
        sys.stdout.flush()

    async with open_services(job["registry_url"], clock=SystemClock(), secret=secret, pool_size=4) as services:

        def handler() -> CloudHandler:
            return cloud_handler(services, cfg, login, keys=keys)

        async with handler() as first:
            await first.wait_ready(30)
        say({"state": "sessions"})
        if (await stdin.readline()).strip() != b"go":
            return
        stop = asyncio.create_task(stdin.readline())
        async with handler() as cloud:
            started, cpu_started, loop_started = time.monotonic(), time.process_time(), time.thread_time()
            workers = _worker_cpu(cloud)
            last_handled = started

            def handled(s: HandlerStats) -> int:
                return s.applied["status"] + sum(s.refused.values()) + s.handler_errors

            while not stop.done():
                seen = handled(cloud.stats)

                def moved(s: HandlerStats, seen: int = seen) -> bool:
                    return handled(s) > seen

                with contextlib.suppress(TimeoutError):
                    await cloud.wait_for(moved, 0.1)
                if handled(cloud.stats) > seen:
                    last_handled = time.monotonic()
                stats = cloud.stats
                say({
                    "started": started, "last_handled": last_handled,
                    "stats": {
                        "handled": handled(stats), "applied": stats.applied["status"],
                        "refused": dict(stats.refused), "handler_errors": stats.handler_errors,
                        "dropped_incoming": stats.dropped_incoming, "status_batches": stats.status_batches,
                        "cpu": time.process_time() - cpu_started, "loop_cpu": time.thread_time() - loop_started,
                        "worker_cpu": _worker_cpu(cloud) - workers,
                    },
                })


def _child_main() -> int:
    # Reports go to the real stdout; anything else written to stdout (logs) goes to stderr instead.
    reports = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = reports
    configure_logging("WARNING")
    job = json.loads(sys.stdin.readline())
    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        asyncio.run(_child(job))
    return 0


def _worker_cpu(cloud: CloudHandler) -> float:
    """CPU seconds the handler's verification workers have used so far."""
    import psutil

    pool = getattr(cloud.cars, "pool", None)  # getattr: also measures handlers without verify workers
    total = 0.0
    for pid in pool.worker_pids() if pool is not None else []:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


def _verify_cost_us(rounds: int = 2000) -> float:
    """CPU microseconds of one bare Ed25519 verification (the calibration unit of `StatusThroughput`)."""
    key = SigningKey.generate("calibration")
    data = b"x" * 1000
    signature = key.sign(data)
    public = key.public_key()
    started = time.thread_time()
    for _ in range(rounds):
        public.verify_signature(signature, data)
    return (time.thread_time() - started) / rounds * 1e6


async def _count_newest(registry: Registry, newest: dict[str, tuple[int, float]]) -> int:
    good = 0
    for vin, (_seq, at) in newest.items():
        state = await registry.get_vehicle_state(vin)
        if state is not None and state.status is not None and state.updated_at == at:
            good += 1
    return good


@contextlib.asynccontextmanager
async def scratch_postgres(admin_dsn: str) -> AsyncIterator[str]:
    """A fresh PostgreSQL database for one run (dropped afterwards); its URL."""
    import asyncpg

    name = f"tcusim_p3_{secrets.token_hex(5)}"
    conn = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield f"{admin_dsn.rsplit('/', 1)[0]}/{name}"
    finally:
        conn = await asyncpg.connect(admin_dsn, timeout=10)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


async def _main(args: argparse.Namespace) -> int:
    config_fields: dict[str, Any] = {"client_id": "cloud-p3", "session_expiry_s": 3600, "car_workers": args.workers}
    config_fields.update(json.loads(args.config))
    config = HandlerConfig(**config_fields)

    def say(text: str) -> None:
        print(f"... {text}", file=sys.stderr)

    async def run(url: str | None) -> StatusThroughput:
        return await measure_status_throughput(
            messages=args.messages, cars=args.cars, registry_url=url, config=config, duplicates=args.duplicates,
            retain=args.retain, max_inflight=args.max_inflight, progress=say, processes=args.processes,
        )

    if args.db == "postgresql":
        async with scratch_postgres(args.pg_admin) as url:
            result = await run(url)
    else:
        result = await run(None if args.db == "sqlite" else args.db)
    print(result.summary())
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    return 0 if result.none_lost else 1


def main(argv: list[str] | None = None) -> int:
    """`python -m tcu_sim.bench._p3`: one P3 measurement, printed; exit 1 when something was lost."""
    parser = argparse.ArgumentParser(prog="python -m tcu_sim.bench._p3", description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--cars", type=int, default=1_000)
    parser.add_argument("--duplicates", type=int, default=0)
    parser.add_argument("--db", default="sqlite", help="sqlite, postgresql (scratch database) or a registry URL")
    parser.add_argument("--pg-admin", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--workers", type=int, default=HandlerConfig().car_workers)
    parser.add_argument("--max-inflight", type=int, default=20)
    parser.add_argument("--retain", action="store_true")
    parser.add_argument("--config", default="{}", help="more HandlerConfig fields, as JSON")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--processes", type=int, default=1,
                        help="cloud processes draining together (shared subscriptions; 1 to 8)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one of those processes
    args = parser.parse_args(argv)
    if args.child:
        return _child_main()
    return asyncio.run(_main(args))


if __name__ == "__main__":
    raise SystemExit(main())
