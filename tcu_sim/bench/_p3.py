"""SPEC P3 measured end to end: signed statuses from many cars, through a real Mosquitto, verified and applied by
ONE cloud process (the `CloudHandler` that `broker.runtime` builds), none lost.

    result = await measure_status_throughput(messages=20_000, cars=1_000, registry_url="sqlite:///tmp/p3.db")
    print(result.summary())

or from a shell (a scratch PostgreSQL database is created and dropped with `--db postgresql`):

    .venv/bin/python -m tcu_sim.bench._p3 --messages 20000 --cars 1000 --db sqlite
    .venv/bin/python -m tcu_sim.bench._p3 --db postgresql --pg-admin postgresql://postgres@127.0.0.1:5432/postgres
    .venv/bin/python -m tcu_sim.bench._p3 --config '{"verify_processes": 2}' --json

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
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
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
            f"P3 {self.backend}: {self.per_second:,.0f} statuses/s, {self.per_total_cpu_second:,.0f} per CPU second,"
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
) -> StatusThroughput:
    """Publish `messages` signed statuses from `cars` cars (plus `duplicates` redelivered copies) to a real
    Mosquitto and time one cloud process applying them all (see the module docstring). `registry_url` defaults
    to a SQLite file in the work directory; `max_inflight` is Mosquitto's `max_inflight_messages` (production:
    20). Raises TimeoutError when the cloud has not accounted for every message within `timeout_s`."""
    say = progress or (lambda _text: None)
    if messages < cars or cars < 1:
        raise ValueError("need at least one message per car")
    own_dir = workdir is None
    root = Path(tempfile.mkdtemp(prefix="tcu-sim-p3-")) if workdir is None else workdir
    root.mkdir(parents=True, exist_ok=True)
    url = registry_url or f"sqlite://{root / 'p3.db'}"
    cfg = config or HandlerConfig(client_id="cloud-p3", session_expiry_s=3600)
    if cfg.session_expiry_s == 0:
        raise ValueError("the cloud needs a persistent session (session_expiry_s > 0) to have its queue kept")
    rng = random.Random(seed)
    clock = SystemClock()
    try:
        say(f"signing {messages} statuses of {cars} cars")
        fleet = _make_fleet(cars, messages, clock.now(), rng)
        copies = [fleet.messages[rng.randrange(len(fleet.messages))] for _ in range(duplicates)]
        topics = Topics(cfg.topic_prefix)
        secret = ServerSecret(secrets.token_bytes(32))
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

            async with handler() as first:  # creates the persistent session and its subscriptions
                await first.wait_ready(30)
            say(f"publishing {messages + duplicates} messages for the cloud's session")
            await _feed(broker, topics, fleet.messages + copies, retain=retain)
            total = messages + duplicates

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
                config={
                    "car_workers": cfg.car_workers,
                    "max_inflight_messages": max_inflight,
                    "protocol": cfg.protocol,
                    "retain": retain,
                    "verify_processes": getattr(cfg, "verify_processes", 0),
                    **{k: v for k, v in cfg.model_dump().items() if k.startswith("car_batch")},
                },
            )
    finally:
        if own_dir:
            shutil.rmtree(root, ignore_errors=True)


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
            retain=args.retain, max_inflight=args.max_inflight, progress=say,
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
    return asyncio.run(_main(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
