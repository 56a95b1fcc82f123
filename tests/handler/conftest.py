"""Fixtures for the cloud handler tests: a real Mosquitto (the `mosquitto` fixture of tcu_sim.testing) with the
cloud handler on it, over a fresh SQLite registry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

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
