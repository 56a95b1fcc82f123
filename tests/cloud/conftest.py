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
from cloud_testkit import FLEET, START, TABLES, execute_sql, services

from broker.cloud import CloudServices
from broker.registry import SqlRegistry, open_registry
from tcu_sim.clock import VirtualClock

ADMIN_DSN = os.environ.get("TCU_SIM_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session (per xdist worker); its DSN."""
    name = f"tcusim_test_{secrets.token_hex(5)}"
    try:
        execute_sql(ADMIN_DSN, f'CREATE DATABASE "{name}"')
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
    execute_sql(ADMIN_DSN, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty registry: a SQLite file, or a schema of its own in the session's PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path}/cloud.db"
    dsn: str = request.getfixturevalue("postgres_database")
    execute_sql(dsn, ";".join(f"DELETE FROM {table}" for table in TABLES))  # noqa: S608 - names are TABLES constants
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
