"""`tcu-sim scenario run --report-html OUT`: the report with its picture (faults, cars online, command outcomes),
drawn with matplotlib from the run's event stream."""

from __future__ import annotations

import base64
import re
from pathlib import Path

from click.testing import CliRunner

from tcu_sim.cli import cli
from tcu_sim.events import CarConnection, CommandChanged, Event, FaultChanged, Source
from tcu_sim.scenario import timeline_png
from tcu_sim.testing.plugin import require_mosquitto

ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_a_scenario_run_writes_its_picture(tmp_path: Path) -> None:
    require_mosquitto()
    out = tmp_path / "report.html"
    scenario = ROOT / "fleet_configs" / "scenarios" / "spin-brute-force.yaml"
    result = CliRunner().invoke(
        cli, ["--log-level", "ERROR", "scenario", "run", str(scenario), "--time-scale", "120", "--quiet",
              "--report-html", str(out)],
    )
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    assert "scenario spin-brute-force: PASSED" in page
    match = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert match is not None, "no inline picture"
    png = base64.b64decode(match.group(1))
    assert png.startswith(PNG_MAGIC)
    assert len(png) > 10_000  # three panels, not an empty canvas
    assert "the owner again, after the lock" in page  # the text report is there too


def test_the_timeline_draws_faults_cars_and_commands() -> None:
    vin = "VSSZZZKLZMR012345"
    events: list[Event] = [
        CarConnection(at=100.0, source=Source.FLEET, vin=vin, online=True),
        FaultChanged(at=110.0, source=Source.FAULTS, target=vin, fault="offline", active=True),
        CarConnection(at=110.5, source=Source.FLEET, vin=vin, online=False, reason="fault"),
        FaultChanged(at=140.0, source=Source.FAULTS, target=vin, fault="offline", active=False),
        CarConnection(at=141.0, source=Source.FLEET, vin=vin, online=True),
        CommandChanged(at=150.0, source=Source.CLOUD, command_id="c1", vin=vin, op="lock", state="succeeded",
                       user_id="u1", created_at=149.5),
    ]
    png = timeline_png(events, title="synthetic", cars=1)
    assert png.startswith(PNG_MAGIC)
    assert timeline_png([], title="nothing happened").startswith(PNG_MAGIC)
