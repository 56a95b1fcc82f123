"""Every kind of fault in a fleet file raises a FleetConfigError naming the file, the path and the problem."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tcu_sim.fleet import FleetConfigError, load_fleet

GOOD = """\
name: test
seed: 7
defaults:
  home_area: {center: {lat: 41.39, lon: 2.17}, radius_km: 2}
groups:
  - name: leon
    count: 3
    model: leon
    equipment: media_system
  - name: ateca-radio
    count: 2
    model: ateca
    equipment: radio
"""

USER = """\
users:
  - email: a@tcu-sim.test
    password: long-enough-password
    spin: "4711"
    vehicles: [leon]
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _error(tmp_path: Path, text: str) -> FleetConfigError:
    with pytest.raises(FleetConfigError) as info:
        load_fleet(_write(tmp_path, text))
    return info.value


def test_the_good_base_loads(tmp_path: Path) -> None:
    config = load_fleet(_write(tmp_path, GOOD + USER))
    assert [g.name for g in config.groups] == ["leon", "ateca-radio"]
    assert config.car_count == 5


# (case id, YAML text, expected path, expected words in the problem, expected line or None)
CASES = [
    ("yaml-syntax", GOOD + "zones: [\n", "", "YAML syntax error", 15),
    ("yaml-tab", GOOD.replace("    count: 3", "\tcount: 3"), "", "YAML syntax error", 7),
    (
        "duplicate-key",
        GOOD.replace("    count: 3\n", "    count: 3\n    count: 4\n"),
        "groups[0].count",
        "duplicate key 'count'",
        8,
    ),
    ("top-level-list", "- 1\n- 2\n", "", "top level must be a mapping", 1),
    ("empty-file", "# nothing\n", "", "empty", None),
    ("unknown-top-key", GOOD + "grups: []\n", "grups", "unknown key 'grups' (did you mean 'groups'?)", 14),
    (
        "unknown-group-key",
        GOOD.replace("    count: 3\n", "    count: 3\n    colour: red\n"),
        "groups[0].colour",
        "unknown key 'colour'",
        8,
    ),
    ("missing-name", GOOD.replace("name: test\n", ""), "name", "missing", None),
    ("missing-count", GOOD.replace("    count: 2\n", ""), "groups[1].count", "missing", 10),
    ("count-string", GOOD.replace("count: 3", "count: three"), "groups[0].count", "valid integer", 7),
    ("count-bool", GOOD.replace("count: 3", "count: yes"), "groups[0].count", "valid integer", 7),
    ("count-zero", GOOD.replace("count: 3", "count: 0"), "groups[0].count", "greater than or equal to 1", 7),
    ("seed-float", GOOD.replace("seed: 7", "seed: 7.5"), "seed", "integer", 2),
    ("no-groups", "name: t\nseed: 1\ngroups: []\n", "groups", "at least 1", 3),
    ("unknown-model", GOOD.replace("model: leon", "model: ibiza"), "groups[0].model", "'leon'", 8),
    ("typo-model", GOOD.replace("model: leon", "model: lean"), "groups[0].model", "did you mean 'leon'", 8),
    (
        "unknown-equipment",
        GOOD.replace("equipment: media_system", "equipment: cassette"),
        "groups[0].equipment",
        "'media_system'",
        9,
    ),
    (
        "bad-combination",
        GOOD.replace("model: ateca", "model: born"),
        "groups[1].equipment",
        "a born is built with media_system or navigation, not radio",
        None,
    ),
    (
        "duplicate-group",
        GOOD.replace("name: ateca-radio", "name: leon"),
        "groups[1].name",
        "duplicate group name 'leon'",
        10,
    ),
    ("group-name-all", GOOD.replace("name: ateca-radio", "name: all"), "groups[1].name", "reserved", 10),
    ("group-name-upper", GOOD.replace("name: ateca-radio", "name: Ateca"), "groups[1].name", "pattern", 10),
    (
        "latitude",
        GOOD.replace("lat: 41.39", "lat: 141.39"),
        "defaults.home_area.center.lat",
        "less than or equal",
        4,
    ),
    (
        "radius-negative",
        GOOD.replace("radius_km: 2", "radius_km: -2"),
        "defaults.home_area.radius_km",
        "greater than or equal to 0",
        4,
    ),
    ("nan", GOOD.replace("radius_km: 2", "radius_km: .nan"), "defaults.home_area.radius_km", "finite", 4),
    (
        "no-home-area",
        GOOD.replace("defaults:\n  home_area: {center: {lat: 41.39, lon: 2.17}, radius_km: 2}\n", ""),
        "groups[0].home_area",
        "missing: set it here or in defaults.home_area",
        None,
    ),
    (
        "bad-duration",
        GOOD + "  - {name: x, count: 1, model: leon, equipment: media_system, status_interval_s: 5 min}\n",
        "groups[2].status_interval_s",
        "duration like '30s'",
        None,
    ),
    (
        "zero-interval",
        GOOD.replace("defaults:\n", "defaults:\n  status_interval_s: 0s\n"),
        "defaults.status_interval_s",
        "greater than 0",
        4,
    ),
    (
        "profile",
        GOOD.replace("defaults:\n", "defaults:\n  connectivity: {profile: spotty}\n"),
        "defaults.connectivity.profile",
        "'good', 'weak', 'flaky' or 'offline'",
        4,
    ),
    (
        "drop-rate-not-flaky",
        GOOD.replace("defaults:\n", "defaults:\n  connectivity: {profile: good, drop_rate: 0.2}\n"),
        "defaults.connectivity.drop_rate",
        "flaky",
        4,
    ),
    (
        "drop-rate-range",
        GOOD.replace("defaults:\n", "defaults:\n  connectivity: {profile: flaky, drop_rate: 2}\n"),
        "defaults.connectivity.drop_rate",
        "less than or equal to 1",
        4,
    ),
    (
        "date-and-age",
        GOOD.replace(
            "    count: 3\n",
            "    count: 3\n    registered_at: 2025-01-01\n    registered_age_days: {min: 1, max: 2}\n",
        ),
        "groups[0].registered_age_days",
        "not both",
        None,
    ),
    (
        "age-order",
        GOOD.replace("    count: 3\n", "    count: 3\n    registered_age_days: {min: 9, max: 2}\n"),
        "groups[0].registered_age_days.max",
        "must be >= min",
        None,
    ),
    (
        "bad-date",
        GOOD.replace("    count: 3\n", "    count: 3\n    registered_at: 2025-13-01\n"),
        "groups[0].registered_at",
        "date",
        8,
    ),
    (
        "zone-two-shapes",
        GOOD + "zones:\n  - name: z\n    kind: tunnel\n    circle: {center: {lat: 1, lon: 1}, radius_m: 5}\n"
        "    polygon: [[1, 1], [1, 2], [2, 2]]\n",
        "zones[0].polygon",
        "exactly one shape",
        None,
    ),
    ("zone-no-shape", GOOD + "zones:\n  - {name: z, kind: tunnel}\n", "zones[0]", "needs a shape", 15),
    (
        "zone-kind",
        GOOD + "zones:\n  - {name: z, kind: bridge, circle: {center: {lat: 1, lon: 1}, radius_m: 5}}\n",
        "zones[0].kind",
        "'tunnel' or 'underground_parking'",
        15,
    ),
    (
        "zone-polygon-short",
        GOOD + "zones:\n  - {name: z, kind: tunnel, polygon: [[1, 1], [1, 2]]}\n",
        "zones[0].polygon",
        "at least 3",
        15,
    ),
    (
        "zone-duplicate",
        GOOD + "zones:\n  - {name: z, kind: tunnel, circle: {center: {lat: 1, lon: 1}, radius_m: 5}}\n"
        "  - {name: z, kind: tunnel, circle: {center: {lat: 1, lon: 1}, radius_m: 5}}\n",
        "zones[1].name",
        "duplicate zone name",
        16,
    ),
    (
        "user-unknown-group",
        GOOD + USER.replace("[leon]", "[leon, born]"),
        "users[0].vehicles[1]",
        "unknown group 'born' (groups: leon, ateca-radio)",
        18,
    ),
    (
        "user-bad-selector",
        GOOD + USER.replace("[leon]", "['leon[x]']"),
        "users[0].vehicles[0]",
        "not a car selector",
        18,
    ),
    (
        "user-index-past-end",
        GOOD + USER.replace("[leon]", "['leon[0:9]']"),
        "users[0].vehicles[0]",
        "reaches past group 'leon', which has 3 cars",
        18,
    ),
    (
        "user-unknown-vin",
        GOOD + USER.replace("[leon]", "[VSSZZZKLZRR000001]"),
        "users[0].vehicles[0]",
        "no car of this fleet has VIN",
        18,
    ),
    (
        "user-bad-email",
        GOOD + USER.replace("a@tcu-sim.test", "not-an-address"),
        "users[0].email",
        "not an e-mail address",
        15,
    ),
    (
        "user-spin-number",
        GOOD + USER.replace('"4711"', "4711"),
        "users[0].spin",
        "quoted string of 4 digits",
        17,
    ),
    ("user-spin-trivial", GOOD + USER.replace('"4711"', '"1234"'), "users[0].spin", "trivial", 17),
    ("user-spin-run-wrapping", GOOD + USER.replace('"4711"', '"8901"'), "users[0].spin", "trivial", 17),
    ("user-spin-down", GOOD + USER.replace('"4711"', '"6543"'), "users[0].spin", "trivial", 17),
    ("user-spin-same", GOOD + USER.replace('"4711"', '"7777"'), "users[0].spin", "trivial", 17),
    ("user-spin-pair", GOOD + USER.replace('"4711"', '"1212"'), "users[0].spin", "trivial", 17),
    ("user-spin-length", GOOD + USER.replace('"4711"', '"47110"'), "users[0].spin", "exactly 4 digits", 17),
    (
        "user-short-password",
        GOOD + USER.replace("long-enough-password", "short"),
        "users[0].password",
        "at least 8 characters",
        16,
    ),
    ("user-role", GOOD + USER + "    role: owner\n", "users[0].role", "'primary' or 'secondary'", 19),
    (
        "user-duplicate",
        GOOD + USER + USER.replace("users:\n", "").replace("[leon]", "[ateca-radio]"),
        "users[1].email",
        "duplicate user e-mail",
        19,
    ),
    (
        "two-primaries",
        GOOD + USER + USER.replace("users:\n", "").replace("a@", "b@").replace("[leon]", "['leon[1]']"),
        "users[1].vehicles[0]",
        "already has primary user a@tcu-sim.test",
        22,
    ),
    (
        "secondary-without-primary",
        GOOD
        + USER
        + USER.replace("users:\n", "").replace("a@", "b@").replace("[leon]", "[ateca-radio]")
        + "    role: secondary\n",
        "users[1].vehicles[0]",
        "has no primary user",
        22,
    ),
    ("garage-full", GOOD.replace("count: 3", "count: 60") + USER, "users[0].vehicles", "at most 50", 18),
    (
        "step-duration",
        GOOD + "scenario:\n  - {at: soon, do: go_offline, cars: leon}\n",
        "scenario[0].at",
        "duration like",
        15,
    ),
    (
        "step-action",
        GOOD + "scenario:\n  - {at: 10s, do: explode, cars: leon}\n",
        "scenario[0].do",
        "'open_door'",
        15,
    ),
    (
        "step-needs-cars",
        GOOD + "scenario:\n  - {at: 10s, do: go_offline}\n",
        "scenario[0].cars",
        "acts on cars",
        15,
    ),
    (
        "step-broker-no-cars",
        GOOD + "scenario:\n  - {at: 1m, do: broker_restart, cars: all}\n",
        "scenario[0].cars",
        "acts on the broker",
        15,
    ),
    (
        "step-unknown-group",
        GOOD + "scenario:\n  - {at: 1m, do: go_offline, cars: [leon, born]}\n",
        "scenario[0].cars[1]",
        "unknown group 'born'",
        15,
    ),
    ("topic-prefix", GOOD + "topic_prefix: 'lab/+/x'\n", "topic_prefix", "'+'", 14),
]


@pytest.mark.parametrize(("text", "path", "problem", "line"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_error_names_file_path_and_problem(
    tmp_path: Path, text: str, path: str, problem: str, line: int | None
) -> None:
    error = _error(tmp_path, text)
    message = str(error)
    file = str(tmp_path / "fleet.yaml")
    issue = next((i for i in error.issues if i.path == path and problem in i.problem), None)
    assert issue is not None, f"no issue at {path!r} mentioning {problem!r} in:\n{message}"
    if line is not None:
        assert issue.line == line, message
    # every line of the message is grep-able: file, then path, then the problem
    assert issue.format(file) in message.splitlines()
    assert message.startswith(file)


def test_several_problems_are_all_reported(tmp_path: Path) -> None:
    text = GOOD.replace("count: 3", "count: 0").replace("model: ateca", "model: seat")
    error = _error(tmp_path, text)
    assert {i.path for i in error.issues} == {"groups[0].count", "groups[1].model"}
    assert str(error).splitlines()[0].endswith("2 problems")


def test_every_cross_reference_problem_is_reported_at_once(tmp_path: Path) -> None:
    error = _error(tmp_path, GOOD + """\
users:
  - email: a@tcu-sim.test
    password: long-enough-password
    spin: "4711"
    vehicles: ["leon[0:5]", born]
  - email: b@tcu-sim.test
    password: long-enough-password
    spin: "4711"
    role: secondary
    vehicles: ["ateca-radio[7]"]
scenario:
  - {at: 1s, do: go_offline, cars: [cupra]}
""")
    by_path = {issue.path: issue for issue in error.issues}
    assert set(by_path) == {"users[0].vehicles[0]", "users[0].vehicles[1]", "users[1].vehicles[0]",
                            "scenario[0].cars[0]"}, str(error)
    assert "reaches past group 'leon', which has 3 cars" in by_path["users[0].vehicles[0]"].problem
    assert "unknown group 'born' (groups: leon, ateca-radio)" in by_path["users[0].vehicles[1]"].problem
    assert "reaches past group 'ateca-radio'" in by_path["users[1].vehicles[0]"].problem
    assert "unknown group 'cupra'" in by_path["scenario[0].cars[0]"].problem
    assert str(error).startswith(f"{tmp_path / 'fleet.yaml'}: 4 problems")
    assert all(issue.line for issue in error.issues)  # each with its own line in the file


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(FleetConfigError, match=r"nope\.yaml: cannot read the file"):
        load_fleet(tmp_path / "nope.yaml")


def test_secrets_never_appear_in_errors(tmp_path: Path) -> None:
    secret_password = "s3cret-but-wrong-type"
    text = GOOD + USER.replace("long-enough-password", "[s3cret-but-wrong-type]").replace('"4711"', '"0000"')
    text += "    pasword: hunter2-hunter2\n"
    message = str(_error(tmp_path, text))
    assert secret_password not in message
    assert "0000" not in message
    assert "hunter2" not in message
    assert "users[0].password" in message
    assert "users[0].spin" in message
    assert "unknown key 'pasword' (did you mean 'password'?)" in message


def test_error_lists_the_keys_allowed_there(tmp_path: Path) -> None:
    error = _error(tmp_path, GOOD.replace("    count: 3\n", "    count: 3\n    colour: red\n"))
    assert "allowed here: name, count, model, equipment, home_area" in str(error)
