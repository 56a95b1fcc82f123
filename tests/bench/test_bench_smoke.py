"""The benchmark's measurement steps on a handful of cars over a real Mosquitto: every figure comes out.

Only that the figures exist is asserted, never how fast anything was (timing belongs to `make bench`)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tcu_sim.bench import (
    BenchOptions,
    BenchReport,
    p3_figures,
    prepare_fleet,
    raise_open_files_limit,
    render_table,
    run_size,
)
from tcu_sim.testing.plugin import require_mosquitto

pytestmark = pytest.mark.mosquitto

CARS = 20
PER_SIZE = (
    "P4.connect", "P4.connect_fleet", "P4.cold", "P4.rate", "P4.cpu_fleet", "P4.cpu_broker", "P4.floor",
    "P1.cpu", "P1.rss_car", "P1.rss", "P1.online", "P1.others", "P1.cpu_load",
    "P1.rtt.p50", "P1.rtt.p99", "P1.rtt.ok",
    "P2.p50", "P2.p99", "P2.ok", "P2.cloud_cpu", "P2.cloud_cpu_ms_per_command",
    "P4.storm", "P4.storm_rate", "P4.storm_failed", "P4.storm.cpu_fleet", "P4.storm.floor",
)


async def test_every_figure_is_measured_on_a_small_fleet(tmp_path: Path) -> None:
    require_mosquitto()
    raise_open_files_limit()
    fleet = prepare_fleet(tmp_path, CARS, tmp_path / "state")
    options = BenchOptions(
        sizes=[CARS], settle_s=0.2, cpu_window_s=1.0, command_rate=100.0, commands=20, app_commands=10,
        outage_s=0.5, connect_timeout_s=60.0, storm_timeout_s=60.0,
    )
    report = await run_size(
        fleet, tmp_path, options, app_vins=fleet.vins[:3], driver_vins=fleet.vins[3:], rng=random.Random(1)
    )

    missing = [key for key in PER_SIZE if report.value(key) is None]
    assert missing == [], {f.key: f.note for f in report.figures if f.value is None}
    assert report.value("P1.online") == CARS
    assert report.value("P1.rtt.ok") == options.commands  # every command came back signed and verified
    assert report.value("P2.ok") == options.app_commands
    assert report.details["P1.rtt"]["lost"] == 0

    whole = BenchReport(started_at="test", command="pytest", sizes=[report])
    await p3_figures(whole.shared, tmp_path, BenchOptions(p3_cars=5, p3_per_car=4))
    assert whole.shared.value("P3.rate") is not None, whole.shared.figures
    assert whole.shared.value("P3.lost") == 0
    table = render_table(whole)
    assert all(key in table for key in (*PER_SIZE, "P3.rate", "P3.lost"))
    whole.write_json(tmp_path / "bench.json")
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert {f["key"] for f in saved["sizes"][0]["figures"]} >= set(PER_SIZE)
