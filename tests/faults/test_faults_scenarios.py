"""Every shipped QA scenario passes on the real Mosquitto fixture, and its faults are fixed by its seed."""

from __future__ import annotations

from pathlib import Path

import pytest
from faults_kit import replay_faults

from tcu_sim.scenario import ScenarioOptions, ScenarioReport, ScenarioRunner, load_scenario
from tcu_sim.testing import MosquittoBroker

SCENARIOS = Path(__file__).resolve().parents[2] / "fleet_configs" / "scenarios"
REQUIRED = {
    "tunnel-commute", "broker-outage", "spin-brute-force", "replay-attack", "flaky-rural", "clock-skewed-car",
    "car-services",
}
OPTIONS = ScenarioOptions(time_scale=40.0)


def test_the_required_scenarios_are_shipped() -> None:
    assert {path.stem for path in SCENARIOS.glob("*.yaml")} >= REQUIRED


async def _run(path: Path, broker: MosquittoBroker, workdir: Path) -> ScenarioReport:
    scenario = load_scenario(path)
    report = await ScenarioRunner(scenario, broker, workdir, OPTIONS).run()
    assert report.error is None, report.text()
    assert len(report.expectations) == scenario.expectation_count
    assert report.passed, report.text()
    return report


@pytest.mark.parametrize("name", sorted(REQUIRED))
async def test_shipped_scenario_passes(name: str, mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    report = await _run(SCENARIOS / f"{name}.yaml", mosquitto, tmp_path)
    # Every other scenario injects something.
    assert report.injections or name in {"spin-brute-force", "car-services"}
    if name == "replay-attack":
        car = report.cars[0]
        assert car.commands_rejected == {
            "replayed": 1, "bad_signature": 2, "unknown_key": 1, "expired": 1, "wrong_audience": 1
        }
        assert car.commands_accepted == 2  # only the owner's unlock and lock
        assert car.refused_by_cloud == {"duplicate": 1, "bad_signature": 2, "unknown_key": 1}
    if name == "flaky-rural":
        random_drops = [i for i in report.injections if i.source == "flaky"]
        assert random_drops, "a flaky profile at 0.5 drops per minute must drop some cars within two minutes"
        # The same drops, at the same clock times, as the seed gives with no network at all.
        until = max(i.at for i in random_drops) + 0.001
        replayed = [i for i in await replay_faults(SCENARIOS / "flaky-rural.yaml", until) if i.source == "flaky"]
        assert random_drops == replayed
