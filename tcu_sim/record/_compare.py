"""What a recording says happened, in a form two runs can be compared by, and the comparison.

Outcomes are keyed by what both runs share: app responses by (client id, request id) — a replay sends the
recorded request ids; commands by the request that created them (their ids differ between runs); operator
controls by (VIN, control id); statuses by VIN (the last one of each car).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = ["FINAL_STATES", "STATUS_FIELDS", "Divergence", "Outcomes", "compare", "junit_xml", "status_key"]

FINAL_STATES: Final = frozenset({"succeeded", "failed", "rejected", "timed_out"})
#: The status snapshot fields a replay compares at the end (not times, positions, battery or signal).
STATUS_FIELDS: Final = (
    "locked", "doors", "windows", "ignition", "moving", "privacy_mode", "lights", "aux_heating.state",
)


@dataclass(frozen=True, slots=True)
class Divergence:
    """One place where the replay answered differently: what, about whom, recorded vs replayed."""

    what: str
    """`app response`, `command (cloud)`, `command (car)`, `control result`, `final status`, `commands sent`."""
    subject: str
    expected: str
    actual: str
    line: int | None = None
    """The recording's line of the recorded outcome (None when the replay did something the recording lacks)."""

    def text(self) -> str:
        """One line for the report."""
        where = f"line {self.line}: " if self.line is not None else ""
        return f"{where}{self.what} {self.subject}: recorded {self.expected}, replayed {self.actual}"


@dataclass(slots=True)
class Outcomes:
    """The comparable outcomes of one run's records."""

    responses: dict[tuple[str, str], tuple[str, int]] = field(default_factory=dict)
    """(client, request id) -> (answer: `ok` or the error code with its details, line)."""
    requests: dict[tuple[str, str], str] = field(default_factory=dict)
    """(client, request id) -> a label for the report (`op`, `command lock VIN`)."""
    command_of: dict[tuple[str, str], str] = field(default_factory=dict)
    """(client, request id) -> the command id the cloud answered."""
    cloud_state: dict[str, tuple[str, int]] = field(default_factory=dict)
    """command id -> (last state the app was told, with its reason; line)."""
    car_result: dict[str, tuple[str, int]] = field(default_factory=dict)
    """command id -> (last result the car sent, with its reason; line)."""
    controls: dict[tuple[str, str], tuple[str, int]] = field(default_factory=dict)
    """(VIN, control id) -> (`applied` or `refused: why`, line)."""
    status: dict[str, tuple[dict[str, Any], int]] = field(default_factory=dict)
    """VIN -> (key fields of its last status, line)."""
    sent: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(VIN, op) -> how many signed commands the cloud sent the car."""

    @classmethod
    def of(cls, records: Iterable[Mapping[str, Any]]) -> Outcomes:
        """Read the outcomes from records (file order)."""
        out = cls()
        for record in records:
            out.add(record)
        return out

    def add(self, record: Mapping[str, Any]) -> None:
        """Take one record into account."""
        kind, key, line = record["kind"], record["key"], int(record.get("line", record.get("n", 0)))
        msg, body = record.get("msg"), _body(record)
        if kind == "requests" and isinstance(msg, dict) and isinstance(msg.get("id"), str):
            self.requests[(key, msg["id"])] = request_label(msg)
        elif kind == "responses" and isinstance(msg, dict) and isinstance(msg.get("id"), str):
            self.responses[(key, msg["id"])] = (answer(msg), line)
            result = msg.get("result")
            if isinstance(result, dict) and isinstance(result.get("command_id"), str) and record.get("op") in (
                "command", None
            ):
                self.command_of[(key, msg["id"])] = result["command_id"]
        elif kind == "app_events" and isinstance(msg, dict) and msg.get("type") == "command_progress":
            data = msg.get("data")
            if isinstance(data, dict) and isinstance(data.get("command_id"), str):
                self.cloud_state[data["command_id"]] = (_state(data), line)
        elif kind == "results" and body is not None and isinstance(body.get("command_id"), str):
            self.car_result[body["command_id"]] = (_state(body), line)
        elif kind == "commands" and body is not None:
            self.sent[(key, str(body.get("op")))] += 1
        elif kind == "control_results" and isinstance(msg, dict) and isinstance(msg.get("id"), str):
            self.controls[(key, msg["id"])] = ("applied" if msg.get("ok") else f"refused: {msg.get('error')}", line)
        elif kind == "status" and body is not None:
            self.status[key] = (status_key(body), line)


def _body(record: Mapping[str, Any]) -> dict[str, Any] | None:
    jws = record.get("jws")
    claims = jws.get("claims") if isinstance(jws, dict) else None
    body = claims.get("body") if isinstance(claims, dict) else None
    return body if isinstance(body, dict) else None


def _state(data: Mapping[str, Any]) -> str:
    reason = data.get("reason")
    return f"{data.get('state')}" + (f" ({reason})" if reason else "")


def answer(msg: Mapping[str, Any]) -> str:
    """`ok`, or the error code with the details that are part of the answer (`SPIN_INCORRECT remaining_tries=1`)."""
    if msg.get("ok") is True:
        return "ok"
    error = msg.get("error")
    if not isinstance(error, dict):
        return "error ?"
    details = " ".join(f"{k}={error[k]}" for k in ("remaining_tries", "locked_seconds") if error.get(k) is not None)
    return f"{error.get('code')}" + (f" {details}" if details else "")


def request_label(msg: Mapping[str, Any]) -> str:
    """`login`, `command lock VSS...`: what a request asked, without its secrets."""
    op = str(msg.get("op"))
    params = msg.get("params") if isinstance(msg.get("params"), dict) else {}
    assert isinstance(params, dict)
    if op == "command":
        return f"command {params.get('op')} {params.get('vin')}"
    vin = params.get("vin")
    return f"{op} {vin}" if isinstance(vin, str) else op


def status_key(body: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a status snapshot a replay compares."""
    out: dict[str, Any] = {}
    for name in STATUS_FIELDS:
        value: Any = body
        for part in name.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        out[name] = value
    return out


def compare(recorded: Outcomes, replayed: Outcomes) -> tuple[list[Divergence], list[str]]:
    """Every divergence of `replayed` from `recorded`, and the names of what was compared (for JUnit)."""
    out: list[Divergence] = []
    checked: list[str] = []
    for (client, rid), (expected, line) in recorded.responses.items():
        label = recorded.requests.get((client, rid), "request")
        subject = f"{label} (client {client}, request {rid})"
        checked.append(f"app response {subject}")
        got = replayed.responses.get((client, rid))
        if got is None or got[0] != expected:
            out.append(Divergence("app response", subject, expected, got[0] if got else "no response", line))
        recorded_id = recorded.command_of.get((client, rid))
        if recorded_id is None:
            continue
        replayed_id = replayed.command_of.get((client, rid))
        for what, mine, theirs in (
            ("command (cloud)", recorded.cloud_state, replayed.cloud_state),
            ("command (car)", recorded.car_result, replayed.car_result),
        ):
            if recorded_id not in mine:
                continue
            state, state_line = mine[recorded_id]
            checked.append(f"{what} {subject}")
            other = theirs.get(replayed_id) if replayed_id is not None else None
            if other is None or other[0] != state:
                actual = other[0] if other else ("no command" if replayed_id is None else "no final state")
                out.append(Divergence(what, subject, state, actual, state_line))
    for (vin, cid), (expected, line) in recorded.controls.items():
        checked.append(f"control result {vin} {cid}")
        got = replayed.controls.get((vin, cid))
        if got is None or got[0] != expected:
            actual = got[0] if got else "no answer"
            out.append(Divergence("control result", f"{vin} (control {cid})", expected, actual, line))
    for vin, (fields, line) in recorded.status.items():
        checked.append(f"final status {vin}")
        got_status = replayed.status.get(vin)
        if got_status is None:
            out.append(Divergence("final status", vin, _fields(fields), "no status", line))
            continue
        differ = {k: v for k, v in fields.items() if got_status[0].get(k) != v}
        if differ:
            out.append(Divergence(
                "final status", vin, _fields(differ), _fields({k: got_status[0].get(k) for k in differ}), line
            ))
    for key in sorted(set(recorded.sent) | set(replayed.sent)):
        if recorded.sent[key] != replayed.sent[key]:
            out.append(Divergence(
                "commands sent", f"{key[1]} to {key[0]}", f"{recorded.sent[key]}", f"{replayed.sent[key]}"
            ))
    checked.append("commands sent to the cars")
    return out, checked


def _fields(fields: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_short(v)}" for k, v in fields.items())


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in value.items()) + "}"
    return str(value)


def junit_xml(checked: Sequence[str], divergences: Sequence[Divergence], *, name: str = "replay") -> bytes:
    """JUnit XML: one test case per compared outcome, a failure for each divergence."""
    failures: dict[str, list[Divergence]] = {}
    for divergence in divergences:
        failures.setdefault(f"{divergence.what} {divergence.subject}", []).append(divergence)
    cases = list(dict.fromkeys([*checked, *failures]))
    suite = ET.Element("testsuite", name=name, tests=str(len(cases)), failures=str(len(failures)), errors="0")
    for case_name in cases:
        case = ET.SubElement(suite, "testcase", classname=name, name=case_name)
        for divergence in failures.get(case_name, []):
            failure = ET.SubElement(case, "failure", message=divergence.text()[:300], type="divergence")
            failure.text = divergence.text()
    suites = ET.Element("testsuites")
    suites.append(suite)
    data: bytes = ET.tostring(suites, encoding="utf-8", xml_declaration=True)
    return data
