"""The recording file and what goes into it, without a broker: the header, the reader's errors (with the line),
`record show` and `replay` exiting 2 on a bad file, redaction of every secret, and the recorder's read-only
rights in the broker's ACL."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from broker.mosquitto import AclAction, AclPolicy, ListenerKind
from broker.pki import RECORDER
from tcu_sim.cli import cli
from tcu_sim.record import (
    REDACTED,
    Header,
    Outcomes,
    RecordingError,
    RecordingWriter,
    Redactor,
    UserSecrets,
    classify_topic,
    compare,
    junit_xml,
    plan_inputs,
    read_recording,
    recorder_filters,
    timeline,
)
from tcu_sim.record import ReplayError as ReplayRefused
from tcu_sim.record._redact import Classified

VIN = "VSSZZZK11VN989734"
HEADER = Header(fleet="fleet_configs/demo.yaml", seed=7, started_at=1000.0, virtual_started_at=500.0, fleet_name="demo")
USERS = [UserSecrets("owner@tcu-sim.test", "owner-2026-pass", "2580")]


def _request(n: int, op: str, params: dict[str, Any], *, client: str = "demo-app", token: str | None = None,
             vt: float = 500.0) -> dict[str, Any]:
    msg: dict[str, Any] = {"id": f"r-{n}", "op": op, "params": params}
    if token is not None:
        msg["token"] = token
    return {"n": n, "t": 1000.0 + n, "vt": vt, "dir": "app>cloud", "kind": "requests", "key": client,
            "topic": f"app/{client}/requests", "msg": msg}


def _response(n: int, request: int, result: dict[str, Any] | None = None, error: dict[str, Any] | None = None,
              *, client: str = "demo-app") -> dict[str, Any]:
    msg: dict[str, Any] = {"id": f"r-{request}", "ok": error is None}
    msg.update({"result": result or {}} if error is None else {"error": error})
    return {"n": n, "t": 1000.0 + n, "vt": 500.0, "dir": "cloud>app", "kind": "responses", "key": client,
            "topic": f"app/{client}/responses", "msg": msg}


def _write(path: Path, records: list[dict[str, Any]]) -> None:
    writer = RecordingWriter(path, HEADER)
    for record in records:
        writer.write(record)
    writer.close()


def _gz_lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(gzip.compress(b"".join(lines)))


# -- the file ---------------------------------------------------------------------------------------------------
def test_a_recording_reads_back_with_its_header_and_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl.gz"
    _write(path, [_request(1, "login", {"email": "a@b.test"}), _response(2, 1, {"user_id": "u-1"})])
    assert path.stat().st_mode & 0o777 == 0o600
    recording = read_recording(path)
    assert recording.header == HEADER
    assert [r["line"] for r in recording.records] == [2, 3]
    assert not recording.truncated
    lines = list(timeline(recording))
    assert lines[0].startswith("# recording of demo (fleet fleet_configs/demo.yaml, seed 7), 2 messages")
    assert lines[1].split() == ["+0.000s", "app>cloud", "requests", "demo-app", "login"]
    assert lines[2].split()[-1] == "ok"


def test_a_killed_recorder_leaves_a_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl.gz"
    writer = RecordingWriter(path, HEADER)
    writer.write(_request(1, "login", {"email": "a@b.test"}))
    # No close(): the gzip trailer is missing, as when the process was killed. Every line was flushed.
    recording = read_recording(path)
    assert len(recording.records) == 1
    assert recording.truncated
    writer.close()


@pytest.mark.parametrize(
    ("lines", "line", "problem"),
    [
        ([], None, "empty file"),
        ([b'{"format": "something-else", "version": 1}\n'], 1, "not a tcu-sim recording"),
        ([b'{"format": "tcu-sim-recording", "version": 99, "started_at": 1, "virtual_started_at": 1}\n'], 1,
         "format version 99"),
        ([json.dumps(HEADER.to_json()).encode() + b"\n", b'{"n": 1, "t": 1, "vt": 600, "dir": "app>cloud", '
          b'"kind": "requests", "key": "a"}\n', b"this is not json\n"], 3, "not JSON"),
        ([json.dumps(HEADER.to_json()).encode() + b"\n", b'{"n": 1, "t": 1, "vt": 600, "dir": "app>cloud", '
          b'"kind": "requests", "key": "a", "msg": {"id"'], 2, "cut-off line"),
        ([json.dumps(HEADER.to_json()).encode() + b"\n", b'{"n": 1, "t": 1, "vt": 600, "dir": "car>cloud", '
          b'"kind": "requests", "key": "a"}\n'], 2, "does not fit kind"),
        ([json.dumps(HEADER.to_json()).encode() + b"\n", b'{"n": 1, "t": 1, "vt": 400, "dir": "app>cloud", '
          b'"kind": "requests", "key": "a"}\n'], 2, "goes back in time"),
    ],
)
def test_a_bad_file_is_refused_with_its_line(tmp_path: Path, lines: list[bytes], line: int | None,
                                             problem: str) -> None:
    path = tmp_path / "bad.jsonl.gz"
    _gz_lines(path, lines)
    with pytest.raises(RecordingError) as caught:
        read_recording(path)
    assert caught.value.line == line
    assert problem in caught.value.problem
    assert str(caught.value).startswith(f"{path}:{line}:" if line else f"{path}:")


def test_show_and_replay_exit_2_on_a_truncated_or_garbage_file(tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl.gz"
    _write(good, [_request(1, "login", {"email": "a@b.test"}), _response(2, 1), _request(3, "logout", {})])
    text = gzip.decompress(good.read_bytes())
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(gzip.compress(text[: text.rindex(b'"op":"logout"')]))  # the last line cut off mid-way
    garbage = tmp_path / "garbage.jsonl.gz"
    garbage.write_bytes(b"\x00\x01 not gzip at all")
    runner = CliRunner()
    for args, expected in (
        (["record", "show", str(cut)], f"{cut}:4: cut-off line"),
        (["replay", str(cut)], f"{cut}:4: cut-off line"),
        (["record", "show", str(garbage)], f"{garbage}: not a gzip recording"),
        (["replay", str(garbage)], f"{garbage}: not a gzip recording"),
    ):
        result = runner.invoke(cli, args)
        assert result.exit_code == 2, (args, result.output)
        assert expected in result.output, result.output
    shown = runner.invoke(cli, ["record", "show", str(good)])
    assert shown.exit_code == 0
    assert "logout" in shown.output


def test_replay_refuses_a_secret_it_cannot_put_back_before_starting_anything(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl.gz"
    record = _request(1, "login", {"email": "nobody@else.test", "password": "their-password"})
    Redactor(USERS).redact(record)
    assert record["secrets"] == {"params.password": "unknown"}
    _write(path, [record])
    with pytest.raises(ReplayRefused, match=r"line 2: the password of user nobody@else.test is redacted.*--secrets"):
        plan_inputs(read_recording(path), USERS)
    side = [*USERS, UserSecrets("nobody@else.test", "their-password", None)]
    (planned,) = plan_inputs(read_recording(path), side)
    assert planned.payload["params"]["password"] == "their-password"


def test_replay_puts_back_the_fleet_users_secrets_and_a_wrong_guess_stays_wrong(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl.gz"
    redactor = Redactor(USERS)
    records = [
        redactor.redact(_request(1, "login", {"email": "owner@tcu-sim.test", "password": "owner-2026-pass"})),
        redactor.redact(_response(2, 1, {"token": "tok-secret-1", "email": "owner@tcu-sim.test"})),
        redactor.redact(_request(3, "command", {"vin": VIN, "op": "unlock", "spin": "1111"}, token="tok-secret-1")),
        redactor.redact(_request(4, "command", {"vin": VIN, "op": "unlock", "spin": "2580"}, token="tok-secret-1")),
    ]
    _write(path, records)
    inputs = plan_inputs(read_recording(path), USERS)
    assert inputs[0].payload["params"]["password"] == "owner-2026-pass"
    assert inputs[1].payload["params"]["spin"] not in ("2580", REDACTED)
    assert len(inputs[1].payload["params"]["spin"]) == 4
    assert inputs[2].payload["params"]["spin"] == "2580"
    assert inputs[1].record["session"] == "s1"
    assert inputs[1].record["user"] == "owner@tcu-sim.test"


# -- redaction --------------------------------------------------------------------------------------------------
def test_every_secret_is_redacted_and_what_a_replay_needs_is_said_instead() -> None:
    redactor = Redactor(USERS)
    login = redactor.redact(_request(1, "login", {"email": "owner@tcu-sim.test", "password": "owner-2026-pass"}))
    token = redactor.redact(_response(2, 1, {"token": "tok-very-secret", "email": "owner@tcu-sim.test"}))
    change = redactor.redact(_request(3, "change_spin", {"old_spin": "2580", "new_spin": "3691"},
                                      token="tok-very-secret"))
    added = redactor.redact(_request(4, "add_vehicle", {"vin": VIN, "accept_terms": True}, token="tok-very-secret"))
    pairing = redactor.redact(_response(5, 4, {"vin": VIN, "method": "pairing_code", "pairing_code": "48151623"}))
    mailbox = redactor.redact(_response(6, 4, {"mails": [{"subject": "Verify", "body":
                              "Open https://id.cupra.example/verify?code=Zx9_secretcode-1 (or enter the code "
                              "Zx9_secretcode-1 in the app)."}]}))
    verify = redactor.redact(_request(7, "verify_email", {"code": "Zx9_secretcode-1"}))
    control = redactor.redact({"n": 8, "t": 1.0, "vt": 500.0, "dir": "operator>car", "kind": "control", "key": VIN,
                               "topic": f"sim/{VIN}/control", "msg": {"action": "enter_pairing_code",
                                                                       "params": {"code": "48151623"}}})
    login_in_car = redactor.redact({
        "n": 9, "t": 1.0, "vt": 500.0, "dir": "car>cloud", "kind": "events", "key": VIN, "topic": f"tcu/{VIN}/events",
        "jws": {"header": {"alg": "Ed25519"}, "claims": {"iss": VIN, "body": {
            "type": "infotainment_login", "at": 1.0, "email": "owner@tcu-sim.test", "password": "owner-2026-pass"}}},
    })
    text = json.dumps([login, token, change, added, pairing, mailbox, verify, control, login_in_car])
    for secret in ("owner-2026-pass", "tok-very-secret", "2580", "3691", "48151623", "Zx9_secretcode-1"):
        assert secret not in text
    assert login["secrets"] == {"params.password": "fleet"}
    assert token["defines"] == {"result.token": "s1"}
    assert change["session"] == "s1"
    assert change["user"] == "owner@tcu-sim.test"
    assert change["secrets"] == {"params.old_spin": "fleet", "params.new_spin": {"class": "other", "shape": "digits4"}}
    assert pairing["defines"] == {"result.pairing_code": "p1"}
    assert control["refs"] == {"params.code": "p1"}
    assert mailbox["defines"] == {"result.mails.0.body": ["e1", "e1"]}
    assert verify["refs"] == {"params.code": "e1"}
    assert login_in_car["secrets"] == {"body.password": "fleet"}
    assert repr(USERS[0]) == "UserSecrets('owner@tcu-sim.test', ***)"


def test_topics_are_classified_with_and_without_a_prefix() -> None:
    assert classify_topic(f"tcu/{VIN}/status") == Classified("status", VIN)
    assert classify_topic(f"fleet-a/sim/{VIN}/control/results", "fleet-a") == Classified("control_results", VIN)
    assert classify_topic("app/demo-app/events") == Classified("app_events", "demo-app")
    assert classify_topic("$SYS/broker/uptime") is None
    assert classify_topic(f"tcu/{VIN}/status", "fleet-a") is None


# -- the comparison ---------------------------------------------------------------------------------------------
def test_the_comparison_names_each_divergence_and_junit_carries_it() -> None:
    recorded = Outcomes.of([
        {**_response(2, 1, error={"code": "SPIN_INCORRECT", "message": "m", "remaining_tries": 1}), "line": 3},
        {**_request(1, "command", {"vin": VIN, "op": "unlock"}), "line": 2},
    ])
    replayed = Outcomes.of([_response(2, 1, error={"code": "SPIN_LOCKED", "message": "m", "locked_seconds": 300})])
    divergences, checked = compare(recorded, replayed)
    (divergence,) = divergences
    assert divergence.text() == (
        f"line 3: app response command unlock {VIN} (client demo-app, request r-1): recorded SPIN_INCORRECT "
        "remaining_tries=1, replayed SPIN_LOCKED locked_seconds=300"
    )
    xml = junit_xml(checked, divergences).decode()
    assert 'tests="2" failures="1"' in xml
    assert "SPIN_LOCKED locked_seconds=300" in xml
    assert compare(recorded, recorded)[0] == []


# -- the recorder's rights --------------------------------------------------------------------------------------
def test_the_recorder_reads_every_recorded_topic_and_writes_nothing() -> None:
    policy = AclPolicy()
    device = ListenerKind.DEVICE
    for topic_filter in recorder_filters():
        assert policy.allows(RECORDER, device, AclAction.SUBSCRIBE, topic_filter), topic_filter
    for topic in (f"tcu/{VIN}/commands", f"sim/{VIN}/control", "app/demo-app/responses", f"tcu/{VIN}/status"):
        assert policy.allows(RECORDER, device, AclAction.RECEIVE, topic)
        assert not policy.allows(RECORDER, device, AclAction.PUBLISH, topic)
    assert not policy.allows(RECORDER, device, AclAction.SUBSCRIBE, "#")
    assert not policy.allows(RECORDER, device, AclAction.SUBSCRIBE, "$SYS/#")
    assert not policy.allows(RECORDER, ListenerKind.APP, AclAction.SUBSCRIBE, "app/+/requests")
    prefixed = AclPolicy("fleet-a")
    assert all(prefixed.allows(RECORDER, device, AclAction.SUBSCRIBE, f) for f in recorder_filters("fleet-a"))
