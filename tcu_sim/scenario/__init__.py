"""QA scenarios (SPEC §5): a fleet file whose timeline also holds app requests, attacks and expectations, run
against a cloud and a Mosquitto of its own, with a report and JUnit XML.

    scenario = load_scenario("fleet_configs/scenarios/tunnel-commute.yaml")
    report = await ScenarioRunner(scenario, mosquitto, workdir).run()

The faults a scenario injects are `tcu_sim.faults`; this package plans the timeline (`Scenario`), checks the
expectations, follows what the cloud did through its event stream (`CloudObserver`) and reports.
"""

from __future__ import annotations

from ._expect import DEFAULT_WITHIN_S, Expectation, ExpectKind, parse_expectation
from ._observe import CloudObserver, Handled, token_claims
from ._plot import report_html, timeline_png
from ._report import CarSummary, CloudSummary, ExpectationResult, ScenarioReport, StepRecord
from ._run import ScenarioOptions, ScenarioRunner
from ._scenario import AppParams, AttackParams, Scenario, ScenarioStepPlan, load_scenario, parse_scenario

__all__ = [
    "DEFAULT_WITHIN_S",
    "AppParams",
    "AttackParams",
    "CarSummary",
    "CloudObserver",
    "CloudSummary",
    "ExpectKind",
    "Expectation",
    "ExpectationResult",
    "Handled",
    "Scenario",
    "ScenarioOptions",
    "ScenarioReport",
    "ScenarioRunner",
    "ScenarioStepPlan",
    "StepRecord",
    "load_scenario",
    "parse_expectation",
    "parse_scenario",
    "report_html",
    "timeline_png",
    "token_claims",
]
