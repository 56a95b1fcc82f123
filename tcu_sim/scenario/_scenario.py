"""Scenario files: a fleet file whose `scenario:` timeline also holds app requests, attacks, checks and
`expect:` entries. `load_scenario` checks everything before anything starts.

    name: replay-attack
    seed: 11
    groups: [...]
    users: [...]
    scenario:
      - at: 5s
        do: app
        user: owner@example.com
        cars: leon[0]
        params: {op: unlock, spin: "2580"}
        expect: [{state: succeeded}]
      - at: 20s
        do: attack
        cars: leon[0]
        params: {kind: replay}
        expect: [{rejected: replayed}, {unchanged: true}]

Errors are `FleetConfigError`s like the fleet file's own: file, line, path inside it (`scenario[3].expect[0]`)
and the problem.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tcu_sim.faults import AttackKind, CarFault, FaultSpecError, fault_for_step
from tcu_sim.fleet import (
    ConfigIssue,
    FleetConfig,
    FleetConfigError,
    ScenarioAction,
    ScenarioStep,
    format_duration,
    load_fleet,
    parse_fleet,
    parse_selector,
)
from tcu_sim.protocol import CommandOp

from ._expect import Expectation, parse_expectation

__all__ = ["AppParams", "AttackParams", "Scenario", "ScenarioStepPlan", "load_scenario", "parse_scenario"]

_COMMAND_OPS = {op.value for op in CommandOp}


@dataclass(frozen=True, slots=True)
class AppParams:
    """What an `app` step asks the cloud: a command (`op` is a command op) or another app API op."""

    op: str
    spin: str | None = None
    params: Mapping[str, Any] | None = None
    request_id: str | None = None

    @property
    def is_command(self) -> bool:
        return self.op in _COMMAND_OPS


@dataclass(frozen=True, slots=True)
class AttackParams:
    """What an `attack` step does: the attack, and for `other_vin` the car the command is addressed to."""

    kind: AttackKind
    other: str | None = None
    op: str = "unlock"


@dataclass(frozen=True, slots=True)
class ScenarioStepPlan:
    """One timeline step, checked: its fault, app or attack parameters and its expectations."""

    index: int
    step: ScenarioStep
    expectations: tuple[Expectation, ...]
    fault: CarFault | None = None
    app: AppParams | None = None
    attack: AttackParams | None = None

    @property
    def label(self) -> str:
        """`step 3 (unlock while offline)` or `step 3 (app)`."""
        return f"step {self.index} ({self.step.name or self.step.do.value})"

    def headline(self) -> str:
        """`t=1m05s step 3 (unlock while offline): app unlock on leon[0]`."""
        step = self.step
        what = step.do.value
        if self.app is not None:
            what = f"app {self.app.op}"
        elif self.attack is not None:
            what = f"attack {self.attack.kind.value}"
        elif step.do is ScenarioAction.FAST_FORWARD and step.duration is not None:
            what = f"fast_forward {format_duration(step.duration)}"
        cars = f" on {', '.join(step.cars)}" if step.cars else ""
        return f"t={format_duration(step.at)} {self.label}: {what}{cars}"


@dataclass(frozen=True, slots=True)
class Scenario:
    """A loaded, checked scenario file."""

    config: FleetConfig
    source: str
    plan: tuple[ScenarioStepPlan, ...]

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def expectation_count(self) -> int:
        return sum(len(p.expectations) for p in self.plan)

    @property
    def needs_cloud(self) -> bool:
        """Whether any step talks to the cloud as an app."""
        return any(p.app is not None for p in self.plan)


def load_scenario(path: str | Path) -> Scenario:
    """Load and check a scenario file; FleetConfigError (file, line, path, problem) on any fault."""
    config = load_fleet(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        text = ""
    return _check(config, str(path), text)


def parse_scenario(text: str, *, source: str = "<scenario>") -> Scenario:
    """As `load_scenario`, from text."""
    return _check(parse_fleet(text, source=source), source, text)


def _check(config: FleetConfig, source: str, text: str) -> Scenario:
    issues: list[ConfigIssue] = []
    plan: list[ScenarioStepPlan] = []
    for index, step in enumerate(config.scenario):
        where = f"scenario[{index}]"
        try:
            plan.append(_plan(index, step, where, issues))
        except FaultSpecError as exc:
            issues.append(ConfigIssue(where, str(exc)))
    if issues:
        raise FleetConfigError(source, [_locate(issue, text) for issue in issues])
    return Scenario(config, source, tuple(plan))


def _plan(index: int, step: ScenarioStep, where: str, issues: list[ConfigIssue]) -> ScenarioStepPlan:
    fault = app = attack = None
    action = step.do
    try:
        fault = fault_for_step(step)
    except FaultSpecError as exc:
        issues.append(ConfigIssue(f"{where}.params", str(exc)))
    if action is ScenarioAction.APP:
        app = _app_params(step.params, f"{where}.params", issues)
    elif action is ScenarioAction.ATTACK:
        attack = _attack_params(step.params, f"{where}.params", issues)
    elif action is ScenarioAction.CHECK and not step.expect:
        issues.append(ConfigIssue(f"{where}.expect", "a check step needs at least one expectation"))
    elif action in (ScenarioAction.CHECK, ScenarioAction.FAST_FORWARD) and step.params:
        issues.append(ConfigIssue(f"{where}.params", f"{action.value} takes no params"))
    expectations: list[Expectation] = []
    on_car = attack.kind.on_car if attack is not None else None
    for e, raw in enumerate(step.expect):
        try:
            expectations.append(parse_expectation(raw, action, attack_on_car=on_car))
        except FaultSpecError as exc:
            issues.append(ConfigIssue(f"{where}.expect[{e}]", str(exc)))
    return ScenarioStepPlan(index, step, tuple(expectations), fault, app, attack)


def _app_params(params: Mapping[str, Any], where: str, issues: list[ConfigIssue]) -> AppParams | None:
    allowed = {"op", "spin", "params", "request_id"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        issues.append(ConfigIssue(where, f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"))
        return None
    op = params.get("op")
    if not isinstance(op, str) or not op:
        issues.append(ConfigIssue(f"{where}.op", "missing: the app op (a command like unlock, or an app API op)"))
        return None
    spin = params.get("spin")
    if spin is not None and not isinstance(spin, str):
        issues.append(ConfigIssue(f"{where}.spin", 'must be a quoted string, e.g. spin: "2580"'))
        return None
    inner = params.get("params")
    if inner is not None and not isinstance(inner, Mapping):
        issues.append(ConfigIssue(f"{where}.params", "must be a mapping"))
        return None
    request_id = params.get("request_id")
    if request_id is not None and not isinstance(request_id, str):
        issues.append(ConfigIssue(f"{where}.request_id", "must be a string"))
        return None
    return AppParams(op, spin, dict(inner) if inner is not None else None, request_id)


def _attack_params(params: Mapping[str, Any], where: str, issues: list[ConfigIssue]) -> AttackParams | None:
    allowed = {"kind", "other", "op"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        issues.append(ConfigIssue(where, f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"))
        return None
    try:
        kind = AttackKind(str(params.get("kind")))
    except ValueError:
        kinds = ", ".join(k.value for k in AttackKind)
        issues.append(ConfigIssue(f"{where}.kind", f"one of {kinds}"))
        return None
    other = params.get("other")
    if other is not None:
        try:
            parse_selector(str(other))
        except ValueError as exc:
            issues.append(ConfigIssue(f"{where}.other", str(exc)))
            return None
    op = params.get("op", "unlock")
    if op not in _COMMAND_OPS:
        issues.append(ConfigIssue(f"{where}.op", f"a command op ({', '.join(sorted(_COMMAND_OPS))})"))
        return None
    return AttackParams(kind, None if other is None else str(other), str(op))


def _locate(issue: ConfigIssue, text: str) -> ConfigIssue:
    """The issue with the line and column of its path in the YAML text (when it can be found)."""
    if not text or issue.line is not None:
        return issue
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return issue
    best = node
    for part in _path_parts(issue.path):
        child = None
        if isinstance(part, int) and isinstance(best, yaml.SequenceNode) and part < len(best.value):
            child = best.value[part]
        elif isinstance(part, str) and isinstance(best, yaml.MappingNode):
            child = next((v for k, v in best.value if isinstance(k, yaml.ScalarNode) and k.value == part), None)
        if child is None:
            break
        best = child
    if best is None:
        return issue
    return ConfigIssue(issue.path, issue.problem, best.start_mark.line + 1, best.start_mark.column + 1)


def _path_parts(path: str) -> list[str | int]:
    parts: list[str | int] = []
    for segment in path.split("."):
        name, _, rest = segment.partition("[")
        if name:
            parts.append(name)
        for index in rest.replace("]", "").split("[") if rest else ():
            if index.isdigit():
                parts.append(int(index))
    return parts
