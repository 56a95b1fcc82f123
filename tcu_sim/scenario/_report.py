"""What a scenario run did: injected faults, steps, each car and the cloud, and which expectations held —
as readable text and as JUnit XML (one test case per expectation)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

from tcu_sim.faults import Injection
from tcu_sim.fleet import format_duration

__all__ = ["CarSummary", "CloudSummary", "ExpectationResult", "ScenarioReport", "StepRecord"]


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One timeline step as it ran: when (clock seconds since the start) and what came of it."""

    index: int
    at: float
    headline: str
    outcome: str


@dataclass(frozen=True, slots=True)
class ExpectationResult:
    """One expectation and whether it held (`detail` says what was seen)."""

    step: int
    step_label: str
    at: float
    description: str
    passed: bool
    detail: str
    checked_after_s: float = 0.0
    """Clock seconds from the step to the verdict."""
    checked_after_real_s: float = 0.0
    """Real seconds from the step to the verdict (JUnit's `time`: test-case times add up to the suite's)."""

    @property
    def name(self) -> str:
        return f"{self.step_label}: {self.description}"


@dataclass(frozen=True, slots=True)
class CarSummary:
    """One car at the end of the run, as its TCU and the cloud saw it."""

    vin: str
    group: str
    online: bool
    connects: int
    disconnects: int
    published: int
    seq_issued: int
    applied_by_cloud: int
    refused_by_cloud: dict[str, int]
    outbox: int
    outbox_peak: int
    outbox_dropped: int
    commands_accepted: int
    commands_rejected: dict[str, int]
    drops: int = 0
    zone_entries: int = 0
    signal_pct: int = 0

    def line(self) -> str:
        rejected = ", ".join(f"{k} {v}" for k, v in sorted(self.commands_rejected.items())) or "none"
        refused = ", ".join(f"{k} {v}" for k, v in sorted(self.refused_by_cloud.items())) or "none"
        return (
            f"{self.vin} {self.group:<12} {'online ' if self.online else 'OFFLINE'} "
            f"connects {self.connects}, drops {self.disconnects} (random {self.drops}, zones {self.zone_entries}); "
            f"signed {self.seq_issued}, cloud applied {self.applied_by_cloud}, refused {refused}; "
            f"outbox {self.outbox} (peak {self.outbox_peak}, lost {self.outbox_dropped}); "
            f"commands executed {self.commands_accepted}, rejected {rejected}; signal {self.signal_pct}%"
        )


@dataclass(frozen=True, slots=True)
class CloudSummary:
    """The cloud's counters at the end of the run, and the final state of the commands the scenario sent."""

    stats: dict[str, Any]
    commands: dict[str, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        s = self.stats
        out = [
            f"received {_counts(s.get('received', {}))}",
            f"applied  {_counts(s.get('applied', {}))}",
            f"refused  {_counts(s.get('refused', {}))}",
            f"app requests {_counts(s.get('requests', {}))}; errors {_counts(s.get('errors', {}))}",
            f"commands sent {s.get('commands_sent', 0)}, reconnects {max(0, int(s.get('connects', 1)) - 1)}",
        ]
        if self.commands:
            out.append("commands: " + ", ".join(f"{cid} {state}" for cid, state in self.commands.items()))
        return out


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


@dataclass
class ScenarioReport:
    """The outcome of one scenario run."""

    name: str
    source: str
    seed: int
    description: str = ""
    clock_s: float = 0.0
    real_s: float = 0.0
    injections: list[Injection] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    expectations: list[ExpectationResult] = field(default_factory=list)
    cars: list[CarSummary] = field(default_factory=list)
    cloud: CloudSummary | None = None
    error: str | None = None
    """Set when the run itself broke (setup failed, a step crashed): the scenario then fails."""

    @property
    def passed(self) -> bool:
        """Every expectation held and the run did not break."""
        return self.error is None and all(e.passed for e in self.expectations)

    @property
    def failures(self) -> list[ExpectationResult]:
        return [e for e in self.expectations if not e.passed]

    def text(self, *, max_injections: int = 200) -> str:
        """The readable report."""
        held = sum(1 for e in self.expectations if e.passed)
        verdict = "PASSED" if self.passed else "FAILED"
        out = [
            f"scenario {self.name} ({self.source}), seed {self.seed}: {verdict}",
            f"  {held}/{len(self.expectations)} expectations held; {format_duration(self.clock_s)} of clock time "
            f"in {self.real_s:.1f} s",
        ]
        if self.description:
            out.append(f"  {self.description}")
        if self.error:
            out.append(f"  RUN ERROR: {self.error}")
        out.append("")
        out.append(f"what was injected ({len(self.injections)}):")
        shown = self.injections[:max_injections]
        out += [f"  {i.line()}" for i in shown]
        if len(self.injections) > len(shown):
            out.append(f"  ... {len(self.injections) - len(shown)} more")
        out.append("")
        out.append("timeline:")
        out += [f"  {s.headline} -> {s.outcome}" for s in self.steps]
        out.append("")
        out.append("cars:")
        out += [f"  {c.line()}" for c in self.cars]
        if self.cloud is not None:
            out.append("")
            out.append("cloud:")
            out += [f"  {line}" for line in self.cloud.lines()]
        out.append("")
        out.append("expectations:")
        for e in self.expectations:
            mark = "ok  " if e.passed else "FAIL"
            out.append(f"  [{mark}] t={format_duration(e.at)} {e.name} -- {e.detail}")
        return "\n".join(out) + "\n"

    def junit_xml(self) -> str:
        """JUnit XML: a test suite for the scenario, a test case per expectation (a run error is one more)."""
        failures = len(self.failures)
        suite = ET.Element(
            "testsuite",
            name=f"scenario.{self.name}",
            tests=str(len(self.expectations) + (1 if self.error else 0)),
            failures=str(failures),
            errors="1" if self.error else "0",
            time=f"{self.real_s:.3f}",
        )
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", name="source", value=self.source)
        ET.SubElement(props, "property", name="seed", value=str(self.seed))
        ET.SubElement(props, "property", name="clock_s", value=f"{self.clock_s:.3f}")
        for e in self.expectations:
            case = ET.SubElement(
                suite, "testcase", classname=f"scenario.{self.name}", name=e.name, time=f"{e.checked_after_real_s:.3f}"
            )
            if not e.passed:
                failure = ET.SubElement(case, "failure", message=e.detail[:500], type="ExpectationFailed")
                failure.text = f"t={format_duration(e.at)} {e.name}\n{e.detail}"
        if self.error:
            case = ET.SubElement(suite, "testcase", classname=f"scenario.{self.name}", name="run")
            error = ET.SubElement(case, "error", message=self.error[:500], type="ScenarioError")
            error.text = self.error
        out = ET.SubElement(suite, "system-out")
        out.text = self.text()
        suites = ET.Element("testsuites", name="tcu-sim scenarios")
        suites.append(suite)
        ET.indent(suites)
        return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
