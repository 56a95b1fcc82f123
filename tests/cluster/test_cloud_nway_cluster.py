"""The cloud N-way on a broker without shared subscriptions (issue 17, point 3; docs/scale-out.md): two real
`tcu-sim cloud run` processes on two nodes of the NATS cluster (MQTT 3.1.1, so no `$share/...`) and one
PostgreSQL registry. Every process receives every car message; the registry's seq claims (the per-car windows,
claimed in the transaction that applies the status) let exactly one of them apply each status, and the other
refuses it as a duplicate. App requests over MQTT are taken by one process only (`--no-mqtt-apps` on the
others): otherwise each would answer each request, and an S-PIN checked by both would count twice.

PostgreSQL: a scratch database (`tcusim_nway_<random>`) on `TCU_SIM_TEST_POSTGRES` (default
postgres@127.0.0.1:5432, database `test` for CREATE/DROP DATABASE); unreachable: skipped locally, failed under CI.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg
import httpx
import pytest
from conftest import APP, ClusterFleet
from prometheus_client.parser import text_string_to_metric_families

from broker.cloud import PasswordHasher, ServerSecret
from broker.handler import seq_stream
from broker.registry import open_registry
from broker.runtime import open_services
from tcu_sim.app import AppClient, SpinIncorrect, SpinLocked
from tcu_sim.bench._p3 import status_body
from tcu_sim.cli.cloud import load_server_secret, vehicle_records
from tcu_sim.clock import SystemClock
from tcu_sim.onboard import verification_code
from tcu_sim.protocol import CLOUD, MessageType, Signer, TopicKind, Topics

pytestmark = [pytest.mark.cluster, pytest.mark.postgres, pytest.mark.timeout(150)]

TCU_SIM = [sys.executable, "-c", "from tcu_sim.cli import main; main()"]
ADMIN_DSN = os.environ.get("TCU_SIM_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
STATUSES_PER_CAR = 20  # below the seq window (64): every seq stays visible in the registry
WAIT_S = 60.0


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


@contextlib.asynccontextmanager
async def _scratch_database() -> AsyncIterator[str]:
    name = f"tcusim_nway_{secrets.token_hex(5)}"
    try:
        conn = await asyncpg.connect(ADMIN_DSN, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        message = f"PostgreSQL at {ADMIN_DSN.rsplit('@', 1)[-1]} is not usable: {exc}"
        if _in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"', timeout=30)
    finally:
        await conn.close()
    try:
        yield f"{ADMIN_DSN.rsplit('/', 1)[0]}/{name}"
    finally:
        conn = await asyncpg.connect(ADMIN_DSN, timeout=5)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', timeout=30)
        finally:
            await conn.close()


@dataclass
class _Cloud:
    process: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    metrics: str = ""

    async def counter(self, name: str, **labels: str) -> int:
        async with httpx.AsyncClient(timeout=10) as http:
            text = (await http.get(self.metrics)).text
        return int(sum(
            s.value for family in text_string_to_metric_families(text) for s in family.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ))


@contextlib.asynccontextmanager
async def _cloud_run(
    fleet: ClusterFleet, node: int, client_id: str, dsn: str, *, mqtt_apps: bool = True
) -> AsyncIterator[_Cloud]:
    """`tcu-sim cloud run` on node `node` as `client_id` (MQTT 3.1.1, no shared subscriptions), connected."""
    process = await asyncio.create_subprocess_exec(
        *TCU_SIM, "--log-json", "cloud", "run", "--broker", fleet.cluster.urls[node], "--state",
        str(fleet.state.root), "--db", dsn, "--client-id", client_id, "--mqtt-version", "3.1.1", "--metrics", "0",
        "--mqtt-apps" if mqtt_apps else "--no-mqtt-apps",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
    )
    cloud = _Cloud(process)
    ready = asyncio.Event()

    async def read() -> None:
        assert process.stderr is not None
        async for raw in process.stderr:
            line = raw.decode(errors="replace")
            cloud.lines.append(line)
            if (m := re.search(r"metrics: (http://\S+)", line)) is not None:
                cloud.metrics = m.group(1) if m.group(1).endswith("/metrics") else m.group(1).rstrip("/") + "/metrics"
            if "connected and subscribed" in line:
                ready.set()
        ready.set()  # it ended before it was ready

    reader = asyncio.create_task(read())
    try:
        async with asyncio.timeout(WAIT_S):
            await ready.wait()
        assert process.returncode is None, "".join(cloud.lines)
        assert cloud.metrics, "".join(cloud.lines)
        yield cloud
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            await process.wait()
            await reader


async def _publish(fleet: ClusterFleet, node: int, prefix: str) -> None:
    clock = SystemClock()
    topics = Topics(prefix)
    for vin in fleet.vins:
        signer = Signer(fleet.state.load_car_key(vin), vin, clock, ttl_s=3600)
        async with fleet.cluster.client(vin, node=node) as client:
            for seq in range(1, STATUSES_PER_CAR + 1):
                token = signer.sign(MessageType.STATUS, aud=CLOUD, seq=seq, body=status_body(clock.now(), seq))
                await client.publish(topics.status(vin), token.encode(), qos=1)


async def _wait_all_applied(dsn: str, vins: list[str], clouds: list[_Cloud]) -> None:
    deadline = time.monotonic() + WAIT_S
    async with open_registry(dsn, pool_size=1) as registry:
        while True:
            marks = [await registry.seq_mark(seq_stream(vin, TopicKind.STATUS)) for vin in vins]
            seen = [sum(1 for s in range(1, STATUSES_PER_CAR + 1) if m is not None and m.has_seen(s)) for m in marks]
            if all(n == STATUSES_PER_CAR for n in seen):
                return
            if time.monotonic() > deadline:
                logs = "\n---\n".join("".join(c.lines)[-3000:] for c in clouds)
                raise AssertionError(f"applied per car {seen} of {STATUSES_PER_CAR}:\n{logs}")
            await asyncio.sleep(0.2)  # polling other processes' registry writes: no event crosses processes


async def test_two_cloud_processes_without_shared_subscriptions_apply_each_status_once(
    cluster_fleet: ClusterFleet,
) -> None:
    prefix = cluster_fleet.state.load_manifest().topic_prefix
    total = len(cluster_fleet.vins) * STATUSES_PER_CAR
    async with (
        _scratch_database() as dsn,
        _cloud_run(cluster_fleet, 0, "cloud", dsn) as one,
        _cloud_run(cluster_fleet, 1, "cloud-2", dsn) as two,
    ):
        await _publish(cluster_fleet, 2, prefix)  # the cars on the third node
        await _wait_all_applied(dsn, cluster_fleet.vins, [one, two])
        applied = [await c.counter("tcu_sim_cloud_statuses_applied_total") for c in (one, two)]
        received = [await c.counter("tcu_sim_cloud_messages_received_total", kind="status") for c in (one, two)]
    # Both processes received every status; between them each was applied exactly once.
    assert received == [total, total], received
    assert sum(applied) == total, applied


async def test_the_s_pin_lockout_is_exact_with_one_process_taking_mqtt_apps(cluster_fleet: ClusterFleet) -> None:
    state, cluster, vin = cluster_fleet.state, cluster_fleet.cluster, cluster_fleet.vins[0]
    email, password, spin = "nway@example.com", "N-way-Passw0rd-quux", "2580"
    vehicles, _ = vehicle_records(state.root)
    secret = ServerSecret(load_server_secret(state.cloud_dir / "server.secret"))
    async with _scratch_database() as dsn:
        # The user and the enrolment are seeded through the cloud's services on the shared registry.
        async with open_services(
            dsn, clock=SystemClock(), secret=secret, vehicles=vehicles, passwords=PasswordHasher.for_tests()
        ) as services:
            await services.accounts.register(email, password, spin)
            code = verification_code(m.body for m in await services.accounts.mailbox_for(email))
            assert code is not None
            await services.accounts.verify_email(code)
            token = (await services.accounts.login(email, password)).token
            await services.garage.add_vehicle(token, vin, True)
            await services.garage.complete_by_tkov(vin, email)
        async with (
            _cloud_run(cluster_fleet, 0, "cloud", dsn) as one,
            _cloud_run(cluster_fleet, 1, "cloud-2", dsn, mqtt_apps=False) as two,
            AppClient(cluster.host, cluster.mqtt_ports[2], APP, tls_context=cluster.ssl_context(APP)) as app,
        ):
            await app.login(email, password)
            with pytest.raises(SpinIncorrect) as first:
                await app.command(vin, "lock", spin="9753")
            with pytest.raises(SpinIncorrect) as second:
                await app.command(vin, "lock", spin="9753")
            with pytest.raises(SpinLocked):
                await app.command(vin, "lock", spin="9753")
            requests = [await c.counter("tcu_sim_cloud_app_requests_total", op="command") for c in (one, two)]
    # One failure counted per wrong S-PIN: the request reached one process only.
    assert (first.value.remaining_tries, second.value.remaining_tries) == (2, 1)
    assert requests == [3, 0], requests
