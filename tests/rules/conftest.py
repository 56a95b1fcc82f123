"""Fixtures of the rule tests (SPEC §3, R1-R18): the whole system over MQTT, on one virtual clock.

Every test of this folder runs twice, over a SQLite registry and over a PostgreSQL one (`registry_url`). The rest is
the tcu-sim pytest plugin's own fixtures (`tcu_sim.testing`), re-wired here:

- `mqtt_broker` is always a real Mosquitto (TLS, the generated ACLs), whatever `--tcu-broker` says;
- `tcu_sandbox` is the plugin's `Sandbox` with the cloud's registry at `registry_url` (`Sandbox(registry_url=...)`;
  a second cloud of a test opens the same one) and a handler whose periodic jobs suit virtual jumps of months
  (the `SimClock` still expires commands after every `advance`); the fixture checks the dialect the cloud got;
- `fleet` is `RULES_FLEET` (a Leon, which enrols by two-key verification, and a radio Ateca, which enrols by
  pairing code, both registered on a known day) unless a test names another with `@pytest.mark.tcu_fleet(...)`.

`cloud`, `car`, `app_user`, `app_user_factory`, `fleet_factory`, `faults` and `clock` come from the plugin and use
the sandbox above: the real cloud handler, real `TcuSession` cars and `AppClient` users.

PostgreSQL: one scratch database per xdist worker (`tcusim_rules_<random>`, created on first use, dropped at the
end), every table emptied before each test. The server is `TCU_SIM_TEST_POSTGRES` (default
postgres@127.0.0.1:5432, database `test` for CREATE/DROP DATABASE). Unreachable: the PostgreSQL variants are
skipped locally and fail under CI=true.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import warnings
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from rules_kit import RULES_FLEET, RULES_HANDLER, WAIT

from broker.cloud import CloudConfig
from broker.handler import HandlerConfig
from broker.pki import FleetPKI
from broker.registry import open_registry
from tcu_sim.fleet import FleetConfig
from tcu_sim.testing import BrokerKind, Sandbox, SimBroker, SimClock, resolve_fleet
from tcu_sim.testing.plugin import require_mosquitto

ADMIN_DSN = os.environ.get("TCU_SIM_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
_ADMIN_TIMEOUT_S = 30.0
_KEEP = frozenset({"schema_version"})  # the migrations already applied: emptying it would re-run them


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def _run(coroutine: Any) -> Any:
    """Run a coroutine to completion on a loop of its own (session fixtures live outside any test's loop)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def _admin(statement: str) -> None:
    conn = await asyncpg.connect(ADMIN_DSN, timeout=5)
    try:
        # Bounded: CREATE and DROP DATABASE wait for every other backend of the server to acknowledge them, and
        # a busy server (a benchmark beside the tests) must not hold the suite for minutes.
        await conn.execute(statement, timeout=_ADMIN_TIMEOUT_S)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """The DSN of a fresh, migrated PostgreSQL database for this session (per xdist worker); dropped after."""
    name = f"tcusim_rules_{secrets.token_hex(5)}"
    try:
        _run(_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        message = f"PostgreSQL at {ADMIN_DSN.rsplit('@', 1)[-1]} is not usable: {exc}"
        if _in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    dsn = f"{ADMIN_DSN.rsplit('/', 1)[0]}/{name}"

    async def migrate() -> None:
        async with open_registry(dsn, pool_size=1) as registry:
            assert registry.dialect == "postgresql"

    try:
        _run(migrate())
        yield dsn
    finally:
        try:
            _run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            # The tests are done and passed or failed on their own; a database left over is worth a warning only.
            warnings.warn(f"PostgreSQL scratch database {name} not dropped: {exc!r}", stacklevel=1)


async def _empty_tables(dsn: str) -> None:
    """Delete every row of every registry table (children before the tables they reference): much faster than
    TRUNCATE or a fresh database for tables this small."""
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        tables = {r["tablename"] for r in await conn.fetch(_TABLES, timeout=10)} - _KEEP
        references = {(r["child"], r["parent"]) for r in await conn.fetch(_REFERENCES, timeout=10)}
        order: list[str] = []
        while tables:
            # A table goes once no remaining table references it.
            free = sorted(t for t in tables if not any(p == t and c in tables and c != t for c, p in references))
            if not free:
                raise RuntimeError(f"circular foreign keys among {sorted(tables)}")
            order += free
            tables -= set(free)
        async with conn.transaction():
            for table in order:
                statement = f'DELETE FROM "{table}"'  # noqa: S608 - a name from pg_tables of our own database
                await conn.execute(statement, timeout=_ADMIN_TIMEOUT_S)
    finally:
        await conn.close()


_TABLES = "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
_REFERENCES = """SELECT c.relname AS child, p.relname AS parent FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid JOIN pg_class p ON p.oid = k.confrelid
WHERE k.contype = 'f' AND k.connamespace = 'public'::regnamespace"""


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the test's cloud keeps its registry: a fresh SQLite file, or the worker's PostgreSQL database with
    every table emptied."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/registry.db"
    dsn: str = request.getfixturevalue("postgres_database")
    await _empty_tables(dsn)
    return dsn


@pytest.fixture
def mqtt_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimBroker]:
    """A real Mosquitto for each test (TLS for devices, app logins, the generated ACLs), whatever broker the
    run's `--tcu-broker` option names: the rules are tested on the broker the product runs on."""
    binary = require_mosquitto()
    directory = tmp_path_factory.mktemp("rules-broker")
    pki = FleetPKI(directory / "pki")
    pki.ensure_ca()
    sim_broker = SimBroker.open(BrokerKind.MOSQUITTO, directory=directory / "broker", pki=pki, binary=binary)
    try:
        yield sim_broker
    finally:
        sim_broker.close()


@pytest.fixture
def rules_handler_config() -> HandlerConfig:
    """The cloud handler's settings (a test module overrides this fixture to change them)."""
    return RULES_HANDLER


@pytest.fixture
def tcu_fleet_config(request: pytest.FixtureRequest, tcu_seed: int) -> FleetConfig:
    """The `fleet` of a test: its `@pytest.mark.tcu_fleet(...)`, else `RULES_FLEET`."""
    marker = request.node.get_closest_marker("tcu_fleet")
    source = marker.args[0] if marker is not None else RULES_FLEET
    return resolve_fleet(source, seed=tcu_seed, base=Path(request.node.path).parent)


@pytest_asyncio.fixture
async def tcu_sandbox(
    request: pytest.FixtureRequest,
    mqtt_broker: SimBroker,
    tcu_clock: SimClock,
    tcu_seed: int,
    tcu_cloud_config: CloudConfig | None,
    rules_handler_config: HandlerConfig,
    registry_url: str,
    tmp_path: Path,
) -> AsyncIterator[Sandbox]:
    """The plugin's `Sandbox` (broker, cloud, fleets, users on `tcu_clock`), its cloud on `registry_url`."""
    sandbox = Sandbox(
        tmp_path / "tcu-sim",
        broker=mqtt_broker,
        seed=tcu_seed,
        name=request.node.nodeid,
        clock=tcu_clock,
        cloud_config=tcu_cloud_config,
        handler_config=rules_handler_config,
        registry_url=registry_url,
        timeout=WAIT,
    )
    async with sandbox:
        # The registry really is the one asked for (not the sandbox's own SQLite file).
        expected = "sqlite" if registry_url.startswith("sqlite") else "postgresql"
        assert sandbox.cloud.registry.dialect == expected, sandbox.cloud.registry
        yield sandbox
