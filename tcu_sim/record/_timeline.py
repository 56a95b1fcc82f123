"""`tcu-sim record show`: a recording as a timeline, one line per message.

         +0.000s  app>cloud     requests        demo-app           login demo@tcu-sim.test
         +0.012s  cloud>app     responses       demo-app           login ok
         +0.020s  cloud>car     commands        VSSZZZKL0TR012345  lock cmd-01
         +0.031s  car>cloud     results         VSSZZZKL0TR012345  succeeded cmd-01
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from tcu_sim.record._compare import answer, request_label
from tcu_sim.record._format import Recording

__all__ = ["describe", "timeline"]


def timeline(recording: Recording) -> Iterator[str]:
    """The header as a line, then one line per record: virtual time since the start, direction, topic kind,
    VIN or client id, and what it says (op, state, reason)."""
    h = recording.header
    yield (f"# recording of {h.fleet_name or h.fleet or '?'} (fleet {h.fleet or '?'}, seed {h.seed}), "
           f"{len(recording.records)} messages{', cut off at the end' if recording.truncated else ''}")
    for record in recording.records:
        offset = float(record["vt"]) - h.virtual_started_at
        yield (f"{f'+{offset:.3f}s':>12}  {record['dir']:<12}  {record['kind']:<15} {record['key']:<18} "
               f"{describe(record)}").rstrip()


def describe(record: Mapping[str, Any]) -> str:
    """What one record says, in a few words."""
    kind = record["kind"]
    if "undecodable" in record:
        return f"(undecodable: {record['undecodable']})"
    msg = _obj(record.get("msg"))
    claims = _obj(_obj(record.get("jws")).get("claims"))
    body = _obj(claims.get("body"))
    user = f" {record['user']}" if isinstance(record.get("user"), str) else ""
    retained = " (retained)" if record.get("retained") else ""
    if kind == "requests":
        return f"{request_label(msg)}{user}"
    if kind == "responses":
        return f"{record.get('op', '')} {answer(msg)}".strip()
    if kind == "app_events":
        data = _obj(msg.get("data"))
        if msg.get("type") == "command_progress":
            parts = ("command_progress", data.get("op"), _state(data), data.get("command_id"))
            return " ".join(str(p) for p in parts if p)
        return str(msg.get("type"))
    if kind == "commands":
        return f"{body.get('op')} {body.get('command_id')}"
    if kind == "results":
        return f"{_state(body)} {body.get('command_id')}"
    if kind == "events":
        return f"{body.get('type')}{user}"
    if kind == "status":
        aux = _obj(body.get("aux_heating"))
        return (f"locked={body.get('locked')} ignition={body.get('ignition')} moving={body.get('moving')} "
                f"heater={aux.get('state')}{retained}")
    if kind == "connection":
        return f"{record.get('text')}{retained}"
    if kind == "control":
        return f"{msg.get('action')}{user}" + (f" (id {msg['id']})" if msg.get("id") else "")
    if kind == "control_results":
        return ("applied" if msg.get("ok") else f"refused: {msg.get('error')}") + f" (id {msg.get('id')})"
    return ""


def _state(data: Mapping[str, Any]) -> str:
    reason = data.get("reason")
    return f"{data.get('state')}" + (f" ({reason})" if reason else "")


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
