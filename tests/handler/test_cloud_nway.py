"""The cloud N-way (issue 17, point 3): two real `tcu-sim cloud run` processes — client ids and certificates
`cloud` and `cloud-2`, MQTT 5 shared subscriptions on a real Mosquitto — share one PostgreSQL registry.

Each process serves the app API over HTTP as well (`--http`), so a test picks which process answers a request
(over MQTT the shared subscription picks). What the processes did is read from their Prometheus counters
(`--metrics`) and from the registry (the per-car seq windows: a status is applied exactly when its seq was claimed,
in the same transaction).

- S-PIN lockout (R3) is exact across processes: three wrong tries spread over both lock it, each reply counting
  the tries left.
- One idempotent request (the same request id at both processes) is one command.
- Each status the cars publish is applied exactly once, the work split between the processes.
- A process killed with SIGKILL mid-run loses nothing acknowledged: the broker acknowledged every status to the
  car, the killed cloud had acknowledged only what it had applied (`ack_after_apply`); what it held unapplied stays
  in its persistent session and is delivered again when it comes back, and the survivor keeps applying its share
  meanwhile. In the end every status is applied, once.

PostgreSQL: a scratch database per test (`tcusim_nway_<random>`) on `TCU_SIM_TEST_POSTGRES` (default
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
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from broker.cloud import PasswordHasher, ServerSecret
from broker.handler import seq_stream
from broker.mosquitto import MosquittoBroker
from broker.pki import FleetPKI
from broker.registry import open_registry
from broker.runtime import open_services
from tcu_sim.bench._p3 import status_body
from tcu_sim.cli.cloud import load_server_secret, vehicle_records
from tcu_sim.clock import SystemClock
from tcu_sim.fleet import StateDir, expand_fleet, parse_fleet, provision
from tcu_sim.onboard import verification_code
from tcu_sim.protocol import CLOUD, MessageType, Signer, TopicKind, Topics
from tcu_sim.testing.plugin import require_mosquitto

pytestmark = [pytest.mark.postgres, pytest.mark.mosquitto, pytest.mark.slow]

TCU_SIM = [sys.executable, "-c", "from tcu_sim.cli import main; main()"]
ADMIN_DSN = os.environ.get("TCU_SIM_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
EMAIL = "nway@example.com"
PASSWORD = "N-way-Passw0rd-quux"
SPIN = "2580"
WRONG_SPIN = "9753"
STATUSES_PER_CAR = 40  # below the seq window (64): every seq of a car stays visible in its window
WAIT_S = 60.0

FLEET = """
name: nway
seed: 1717
defaults:
  home_area: {center: {lat: 41.39, lon: 2.17}, radius_km: 1}
groups:
  - {name: leon, count: 3, model: leon, equipment: media_system}
"""


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
class CloudProcess:
    """One `tcu-sim cloud run` child process: its stderr lines, its app API and metrics URLs once ready."""

    client_id: str
    process: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    api: str = ""
    metrics: str = ""

    async def counters(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of its /metrics, by name and labels."""
        async with httpx.AsyncClient(timeout=10) as http:
            text = (await http.get(self.metrics)).text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    async def applied(self) -> int:
        return int((await self.counters()).get(("tcu_sim_cloud_statuses_applied_total", ()), 0))

    async def commands_sent(self) -> int:
        key = ("tcu_sim_cloud_messages_sent_total", (("kind", "command"),))
        return int((await self.counters()).get(key, 0))

    def log(self) -> str:
        return "".join(self.lines)


@dataclass
class NWay:
    """A provisioned fleet, Mosquitto, a PostgreSQL registry with one user who owns the first car."""

    state: StateDir
    broker: MosquittoBroker
    dsn: str
    vins: list[str]
    token: str
    topic_prefix: str
    tmp: Path
    clouds: list[CloudProcess] = field(default_factory=list)

    @contextlib.asynccontextmanager
    async def cloud(self, client_id: str) -> AsyncIterator[CloudProcess]:
        """`tcu-sim cloud run --client-id CLIENT_ID --shared-subscriptions` on the shared registry, ready."""
        process = await asyncio.create_subprocess_exec(
            *TCU_SIM, "--log-json", "cloud", "run", "--broker", f"mqtts://{self.broker.host}:{self.broker.port}",
            "--state", str(self.state.root), "--db", self.dsn, "--client-id", client_id, "--shared-subscriptions",
            "--http", "127.0.0.1:0", "--metrics", "0", "--command-ttl", "600",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
            env={**os.environ, "XDG_CONFIG_HOME": str(self.tmp / "config")},
        )
        cloud = CloudProcess(client_id, process)
        ready = asyncio.Event()

        async def read() -> None:
            assert process.stderr is not None
            async for raw in process.stderr:
                line = raw.decode(errors="replace")
                cloud.lines.append(line)
                if (m := re.search(r"metrics: (http://\S+)", line)) is not None:
                    cloud.metrics = m.group(1).rstrip("/") + ("" if m.group(1).endswith("/metrics") else "/metrics")
                if (m := re.search(r"app API on (http://[^/\s]+)", line)) is not None:
                    cloud.api = m.group(1)
                    ready.set()
            ready.set()  # it ended before it was ready

        reader = asyncio.create_task(read())
        try:
            try:
                async with asyncio.timeout(WAIT_S):
                    await ready.wait()
            except TimeoutError:
                raise AssertionError(f"{client_id} not ready:\n{cloud.log()}") from None
            assert cloud.api, f"{client_id} ended:\n{cloud.log()}"
            self.clouds.append(cloud)
            yield cloud
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGINT)
            async with asyncio.timeout(30):
                await process.wait()
                await reader

    async def publish_statuses(self, vins: list[str], seqs: range) -> None:
        """Each car publishes a signed status for each seq (QoS 1: the broker acknowledged every one)."""
        topics = Topics(self.topic_prefix)
        clock = SystemClock()
        for vin in vins:
            signer = Signer(self.state.load_car_key(vin), vin, clock, ttl_s=3600)
            async with aiomqtt.Client(
                self.broker.host, self.broker.port, identifier=vin, tls_context=self.broker.ssl_context(vin),
                timeout=30,
            ) as client:
                for seq in seqs:
                    body = status_body(clock.now() - 1000 + seq, seq)
                    token = signer.sign(MessageType.STATUS, aud=CLOUD, seq=seq, body=body).encode()
                    await client.publish(topics.status(vin), token, qos=1)

    async def applied_seqs(self, vins: list[str], highest: int) -> dict[str, set[int]]:
        """Per car, which of the seqs 1..highest the registry counts as applied (claimed in its seq window)."""
        out: dict[str, set[int]] = {}
        async with open_registry(self.dsn, pool_size=1) as registry:
            for vin in vins:
                mark = await registry.seq_mark(seq_stream(vin, TopicKind.STATUS))
                out[vin] = {s for s in range(1, highest + 1) if mark is not None and mark.has_seen(s)}
        return out

    async def wait_all_applied(self, vins: list[str], highest: int) -> None:
        """Until every car's seqs 1..highest are applied (the registry polled: another process writes it)."""
        deadline = time.monotonic() + WAIT_S
        while True:
            seen = await self.applied_seqs(vins, highest)
            if all(len(s) == highest for s in seen.values()):
                return
            if time.monotonic() > deadline:
                missing = {vin: sorted(set(range(1, highest + 1)) - s)[:10] for vin, s in seen.items()}
                logs = "\n".join(f"--- {c.client_id}\n{c.log()[-3000:]}" for c in self.clouds)
                raise AssertionError(f"not applied within {WAIT_S:g} s: {missing}\n{logs}")
            await asyncio.sleep(0.2)  # polling another process's registry writes: no event crosses processes


@pytest.fixture
async def nway(tmp_path: Path) -> AsyncIterator[NWay]:
    require_mosquitto()
    config = parse_fleet(FLEET, source="<nway>")
    state = StateDir(tmp_path / "state")
    provision(config, state, clock=SystemClock())
    FleetPKI(state.pki_dir).ensure_identity("cloud-2")  # as `tcu-sim pki issue cloud-2` does
    vins = [car.vin for car in expand_fleet(config)]
    vehicles, prefix = vehicle_records(state.root)
    secret = ServerSecret(load_server_secret(state.cloud_dir / "server.secret"))
    async with _scratch_database() as dsn:
        # The user is seeded through the cloud's own services on the shared registry, as the scenario runner does:
        # register, verify, log in, add the first car and complete the in-car step (two-key verification).
        async with open_services(
            dsn, clock=SystemClock(), secret=secret, vehicles=vehicles, passwords=PasswordHasher.for_tests()
        ) as services:
            await services.accounts.register(EMAIL, PASSWORD, SPIN)
            code = verification_code(m.body for m in await services.accounts.mailbox_for(EMAIL))
            assert code is not None
            await services.accounts.verify_email(code)
            token = (await services.accounts.login(EMAIL, PASSWORD)).token
            await services.garage.add_vehicle(token, vins[0], True)
            await services.garage.complete_by_tkov(vins[0], EMAIL)
        async with MosquittoBroker(tmp_path / "mosquitto", FleetPKI(state.pki_dir)) as broker:
            yield NWay(state, broker, dsn, vins, token, prefix, tmp_path)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_the_s_pin_lockout_is_exact_across_two_cloud_processes(nway: NWay) -> None:
    vin = nway.vins[0]
    path = f"/api/v1/vehicles/{vin}/commands"
    async with (
        nway.cloud("cloud") as one,
        nway.cloud("cloud-2") as two,
        httpx.AsyncClient(base_url=one.api, timeout=20) as at_one,
        httpx.AsyncClient(base_url=two.api, timeout=20) as at_two,
    ):
        first = await at_one.post(path, json={"op": "lock", "spin": WRONG_SPIN}, headers=_bearer(nway.token))
        assert (first.status_code, first.json()["code"], first.json()["remaining_tries"]) == (
            403, "SPIN_INCORRECT", 2)
        second = await at_two.post(path, json={"op": "lock", "spin": WRONG_SPIN}, headers=_bearer(nway.token))
        assert (second.status_code, second.json()["code"], second.json()["remaining_tries"]) == (
            403, "SPIN_INCORRECT", 1)
        third = await at_one.post(path, json={"op": "lock", "spin": WRONG_SPIN}, headers=_bearer(nway.token))
        assert (third.status_code, third.json()["code"]) == (423, "SPIN_LOCKED")
        # Locked for both processes, the right S-PIN included.
        for http in (at_two, at_one):
            right = await http.post(path, json={"op": "lock", "spin": SPIN}, headers=_bearer(nway.token))
            assert (right.status_code, right.json()["code"]) == (423, "SPIN_LOCKED")
            assert right.json()["locked_seconds"] > 0
        assert await one.commands_sent() + await two.commands_sent() == 0
    for cloud in (one, two):
        assert SPIN not in cloud.log()
        assert WRONG_SPIN not in cloud.log()


async def test_the_same_request_id_at_both_processes_is_one_command(nway: NWay) -> None:
    vin = nway.vins[0]
    path = f"/api/v1/vehicles/{vin}/commands"
    headers = _bearer(nway.token) | {"Idempotency-Key": uuid.uuid4().hex}
    async with (
        nway.cloud("cloud") as one,
        nway.cloud("cloud-2") as two,
        httpx.AsyncClient(base_url=one.api, timeout=20) as at_one,
        httpx.AsyncClient(base_url=two.api, timeout=20) as at_two,
    ):
        answers = await asyncio.gather(
            at_one.post(path, json={"op": "lock", "spin": SPIN}, headers=headers),
            at_two.post(path, json={"op": "lock", "spin": SPIN}, headers=headers),
        )
        again = await at_two.post(path, json={"op": "lock", "spin": SPIN}, headers=headers)
        assert [a.status_code for a in (*answers, again)] == [202, 202, 202], [a.text for a in answers]
        ids = {a.json()["command_id"] for a in (*answers, again)}
        assert len(ids) == 1
        # One command went to the car, from one of the two processes.
        assert await one.commands_sent() + await two.commands_sent() == 1


async def test_each_status_is_applied_exactly_once_by_two_processes(nway: NWay) -> None:
    seqs = range(1, STATUSES_PER_CAR + 1)
    async with nway.cloud("cloud") as one, nway.cloud("cloud-2") as two:
        await nway.publish_statuses(nway.vins, seqs)
        await nway.wait_all_applied(nway.vins, STATUSES_PER_CAR)
        applied = [await one.applied(), await two.applied()]
    # Every status was applied (registry) by exactly one process (the counters add up to what was published),
    # and the shared subscription gave both a share.
    assert sum(applied) == len(nway.vins) * STATUSES_PER_CAR, applied
    assert min(applied) > 0, applied


async def test_a_cloud_process_killed_mid_run_loses_nothing_acknowledged(nway: NWay) -> None:
    first, second = range(1, 21), range(21, STATUSES_PER_CAR + 1)
    total = len(nway.vins) * STATUSES_PER_CAR
    async with nway.cloud("cloud") as survivor:
        async with nway.cloud("cloud-2") as victim:
            await nway.publish_statuses(nway.vins, first)
            await nway.wait_all_applied(nway.vins, len(first))
            applied_by_victim = await victim.applied()
            assert applied_by_victim > 0  # it took part
            # Frozen, then killed: the statuses the broker hands it now are received, never applied, never
            # acknowledged. The cars' statuses are all acknowledged by the broker.
            victim.process.send_signal(signal.SIGSTOP)
            await nway.publish_statuses(nway.vins, second)
            victim.process.send_signal(signal.SIGKILL)
            await victim.process.wait()
        # Mosquitto keeps the killed process's persistent session and its share of the messages (those it had
        # been sent included) until it comes back with its client id, or the session expires (docs/scale-out.md).
        async with nway.cloud("cloud-2") as back:
            await nway.wait_all_applied(nway.vins, STATUSES_PER_CAR)
            by_survivor, by_back = await survivor.applied(), await back.applied()
    assert victim.process.returncode == -signal.SIGKILL
    assert by_back > 0  # what the killed process held came back
    # Each status applied exactly once: the three lives of the processes add up to what the cars published (a
    # status applied just before the freeze whose PUBACK had not left yet comes back too: refused, not applied).
    assert applied_by_victim + by_survivor + by_back == total, (applied_by_victim, by_survivor, by_back)
