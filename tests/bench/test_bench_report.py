"""The bench's report from synthetic figures (the bench itself is never run by tests): each figure beside its
target and baseline in the table, and the JSON's stable keys (`values`) for scripts comparing runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

from tcu_sim.bench._report import BenchReport, SizeReport, at_least, at_most, render_table


def _report() -> BenchReport:
    report = BenchReport(started_at="2026-12-05 18:00:00 UTC", command="python -m tcu_sim.bench --sizes 1000")
    size = SizeReport(1000)
    size.add("P2.p50", "app round trip p50", 4.2, "ms", target="≤ 5 ms", check=at_most(5))
    size.add("P2.p99", "app round trip p99", 31.0, "ms", target="≤ 25 ms", check=at_most(25))
    size.add("P2.cloud_cpu_ms_per_command", "cloud CPU per app command", 1.2, "ms", target="≤ 1.5 ms",
             check=at_most(1.5))
    size.add("P1.rtt.p50", "driver p50", math.nan, "ms")
    report.sizes.append(size)
    report.shared.add("P3.rate", "statuses verified + applied", 5100.0, "msg/s", check=at_least(5000))
    return report


def test_the_json_holds_every_value_under_stable_keys(tmp_path: Path) -> None:
    path = tmp_path / "bench.json"
    _report().write_json(path)
    values = json.loads(path.read_text(encoding="utf-8"))["values"]
    assert values["1000"]["P2.p50"] == 4.2
    assert values["1000"]["P2.p99"] == 31.0
    assert values["1000"]["P2.cloud_cpu_ms_per_command"] == 1.2
    assert values["1000"]["P1.rss_car"] is None  # a stable key not measured: there, and None
    assert values["1000"]["P1.rtt.p50"] is None  # NaN is not JSON
    assert values["shared"]["P3.rate"] == 5100.0
    assert values["shared"]["P3.cpu_rate"] is None


def test_the_table_shows_target_verdict_and_baseline_beside_each_figure() -> None:
    table = render_table(_report())
    p99 = next(line for line in table.splitlines() if line.startswith("P2.p99 "))
    assert "≤ 25 ms" in p99
    assert "MISSED" in p99
    assert "214 ms" in p99  # the baseline at 1,000 cars
    cpu = next(line for line in table.splitlines() if line.startswith("P2.cloud_cpu_ms_per_command"))
    assert "met" in cpu
    assert "13 ms" in cpu
    rate = next(line for line in table.splitlines() if line.startswith("P3.rate"))
    assert "3,359 msg/s" in rate


def test_the_ed25519_micro_benchmark_names_both_libraries() -> None:
    from tcu_sim.bench._verify import ed25519_costs

    costs = ed25519_costs(rounds=20)
    assert set(costs) == {"cryptography.verify", "pynacl.verify", "cryptography.sign", "pynacl.sign"}
    assert all(us > 0 for us in costs.values())


def test_the_app_command_cpu_figure_subtracts_the_idle_cost() -> None:
    from tcu_sim.bench._p2cpu import AppCommandCpu

    run = AppCommandCpu(commands=500, succeeded=500, rate_per_s=50, cloud_cpu_s=3.5, cloud_system_s=0.3,
                        idle_cpu_s=0.5, elapsed_s=10.0, p50_ms=10.0, p99_ms=20.0, outcomes={"succeeded": 500})
    assert run.cpu_ms_per_command == 6.0
    assert "6.00 ms per command" in run.summary()
