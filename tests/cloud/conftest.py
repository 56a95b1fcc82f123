"""Fixtures for the cloud domain tests: every test runs against SQLite and against PostgreSQL.

PostgreSQL: a fresh database `tcusim_test_<random>` per test session (dropped at the end), migrated once; each
test starts with its tables emptied (DELETE is ~50x faster than a fresh schema's migration, which one registry
test still exercises). The server is taken from `TCU_SIM_TEST_POSTGRES` (default: postgres@127.0.0.1:5432, database
`test` to connect to for CREATE/DROP DATABASE). Unreachable: the PostgreSQL variants are skipped locally and
fail under CI=true.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import pytest
from cloud_testkit import FLEET, START, services

from broker.cloud import CloudServices
from broker.registry import SqlRegistry, open_registry
from tcu_sim.clock import VirtualClock

#: Every table but schema_version, children before parents (test_cloud_registry checks the list is complete).
TABLES = (
    "command_history", "commands", "audit", "mails", "reminders", "purchases", "licences", "rate_buckets",
    "spin_state", "pairing_codes", "enrolments", "vehicle_state", "vehicles", "sessions", "email_codes", "users",
    "counters", "seq_marks",
)

ADMIN_DSN = os.environ.get("TCU_SIM_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def _execute(dsn: str, statement: str) -> None:
    """Run one statement on its own connection, in a thread of its own: fixtures that need it may be set up
    while the test's event loop is running."""

    async def run() -> None:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session (per xdist worker); its DSN."""
    name = f"tcusim_test_{secrets.token_hex(5)}"
    try:
        _execute(ADMIN_DSN, f'CREATE DATABASE "{name}"')
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        message = f"PostgreSQL at {ADMIN_DSN.rsplit('@', 1)[-1]} is not usable: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    base = ADMIN_DSN.rsplit("/", 1)[0]
    dsn = f"{base}/{name}"

    async def migrate() -> None:
        async with open_registry(dsn) as registry:
            assert registry.dialect == "postgresql"

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, migrate()).result()
    yield dsn
    _execute(ADMIN_DSN, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty registry: a SQLite file, or a schema of its own in the session's PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/cloud.db"
    dsn: str = request.getfixturevalue("postgres_database")
    _execute(dsn, ";".join(f"DELETE FROM {table}" for table in TABLES))  # noqa: S608 - names are TABLES constants
    return dsn


@pytest.fixture
async def registry(registry_url: str) -> AsyncIterator[SqlRegistry]:
    """The opened (migrated) registry."""
    async with open_registry(registry_url, pool_size=4) as reg:
        yield reg


@pytest.fixture
def clock() -> VirtualClock:
    """Virtual time, starting 2026-01-01T00:00:00Z."""
    return VirtualClock(START)


@pytest.fixture
async def cloud(registry: SqlRegistry, clock: VirtualClock) -> CloudServices:
    """The domain services over the registry, with the test fleet imported."""
    services_ = services(registry, clock)
    await services_.vehicles.import_vehicles(FLEET)
    return services_
