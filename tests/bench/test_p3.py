"""The P3 measurement (`tcu_sim.bench._p3`) runs end to end and accounts for every message — what `make bench`
relies on. Only its bookkeeping is checked here: how fast it went is measured by the bench, never asserted."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.handler import HandlerConfig
from tcu_sim.bench._p3 import measure_status_throughput
from tcu_sim.testing.plugin import require_mosquitto


async def test_the_p3_measurement_accounts_for_every_message(tmp_path: Path) -> None:
    require_mosquitto()
    result = await measure_status_throughput(
        messages=300, cars=30, duplicates=20, workdir=tmp_path,
        config=HandlerConfig(client_id="cloud-p3-test", session_expiry_s=60, car_workers=2),
    )
    assert result.applied == 300
    assert result.refused_duplicate == 20
    assert result.newest_stored == 30
    assert result.none_lost, result.as_dict()
    assert result.batches >= 1
    assert "none lost" in result.summary()


async def test_the_p3_measurement_with_two_cloud_processes_splits_and_accounts_for_every_message(
    tmp_path: Path,
) -> None:
    require_mosquitto()
    result = await measure_status_throughput(
        messages=300, cars=30, duplicates=20, workdir=tmp_path, processes=2,
        config=HandlerConfig(client_id="cloud-p3-test", session_expiry_s=60, car_workers=2),
    )
    assert result.processes == 2
    assert result.config["shared_subscriptions"] is True
    assert (result.applied, result.refused_duplicate, result.newest_stored) == (300, 20, 30)
    assert result.none_lost, result.as_dict()
    assert "2 cloud processes" in result.summary()


async def test_p3_refuses_more_processes_than_cloud_identities(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="processes must be 1 to 8"):
        await measure_status_throughput(messages=10, cars=1, workdir=tmp_path, processes=9)
