"""Fixtures for the cloud handler tests: a real Mosquitto (the `mosquitto` fixture of tcu_sim.testing) with the
cloud handler on it, over a fresh SQLite registry (or, with `pg_registry_url`, a fresh PostgreSQL database)."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from handler_kit import Stack, cloud_stack

from tcu_sim.testing import MosquittoBroker


@pytest.fixture
def registry_url(tmp_path: Path) -> str:
    """An empty SQLite registry file."""
    return f"sqlite://{tmp_path}/cloud.db"


@pytest.fixture
async def stack(mosquitto: MosquittoBroker, registry_url: str) -> AsyncIterator[Stack]:
    """The cloud handler running on the test broker."""
    async with cloud_stack(mosquitto, registry_url) as s:
        yield s


PG_ADMIN_DSN = os.environ.get("TCU_SIM_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


async def _pg_execute(dsn: str, statement: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture
async def pg_registry_url() -> AsyncIterator[str]:
    """A fresh PostgreSQL database for one test (dropped after it); skipped when PostgreSQL is unreachable,
    failed under CI=true."""
    name = f"tcusim_handler_{secrets.token_hex(5)}"
    try:
        await _pg_execute(PG_ADMIN_DSN, f'CREATE DATABASE "{name}"')
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        message = f"PostgreSQL at {PG_ADMIN_DSN.rsplit('@', 1)[-1]} is not usable: {exc}"
        if os.environ.get("CI", "").lower() in {"true", "1", "yes"}:
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield f"{PG_ADMIN_DSN.rsplit('/', 1)[0]}/{name}"
    finally:
        await _pg_execute(PG_ADMIN_DSN, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
