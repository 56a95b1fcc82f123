"""broker.mosquitto without a broker: the ACL policy as data, the rendered files, the $7$ password format."""

from __future__ import annotations

import base64
import random
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from broker.mosquitto import (
    AclAction,
    AclPolicy,
    Grant,
    GrantAccess,
    ListenerKind,
    MosquittoConfig,
    filter_covers,
    hash_password,
    read_password_file,
    topic_matches,
    validate_app_username,
    verify_password,
    write_config,
)
from broker.pki import FleetPKI, InvalidIdentityName
from tcu_sim.protocol import generate_vin

_rng = random.Random(11)
CAR, OTHER = generate_vin(_rng), generate_vin(_rng)
DEVICE, APP = ListenerKind.DEVICE, ListenerKind.APP
PUB, SUB, RECV = AclAction.PUBLISH, AclAction.SUBSCRIBE, AclAction.RECEIVE


def _user_blocks(acl: str) -> dict[str, list[str]]:
    blocks: dict[str, list[str]] = {}
    for block in acl.split("\n\n")[1:]:
        head, *lines = block.strip().splitlines()
        blocks[head.removeprefix("user ")] = lines
    return blocks


def test_device_acl_file() -> None:
    acl = AclPolicy().render_device_acl()
    patterns = [line for line in acl.splitlines() if line.startswith("pattern ")]
    for line in (
        "pattern write tcu/%u/status",
        "pattern write tcu/%u/events",
        "pattern write tcu/%u/results",
        "pattern write tcu/%u/connection",
        "pattern read tcu/%u/commands",
        "pattern read sim/%u/control",
    ):
        assert line in patterns
    blocks = _user_blocks(acl)
    assert blocks["cloud"] == [
        "topic read tcu/+/status",
        "topic read tcu/+/events",
        "topic read tcu/+/results",
        "topic read tcu/+/connection",
        "topic write tcu/+/commands",
        "topic read app/+/requests",
        "topic write app/+/responses",
        "topic write app/+/events",
    ]
    assert "topic write sim/#" in blocks["operator"]
    assert "topic read tcu/+/connection" in blocks["operator"]
    # One certificate per cloud process and per operator tool (the client id is the CN): each its own block.
    clouds = ["cloud", *(f"cloud-{n}" for n in range(2, 9))]
    operators = ["operator", *(f"operator-{n}" for n in range(2, 9))]
    assert list(blocks) == [*clouds, *operators, "recorder"]  # the recorder only reads (tests/record)
    assert all(line.startswith("topic read ") for line in blocks["recorder"])
    assert all(blocks[name] == blocks["cloud"] for name in clouds)
    assert all(blocks[name] == blocks["operator"] for name in operators)
    assert list(_user_blocks(AclPolicy(clouds=2).render_device_acl()))[:3] == ["cloud", "cloud-2", "operator"]


def test_cloud_identities_have_the_clouds_rights_and_no_more() -> None:
    policy = AclPolicy(clouds=3)
    assert policy.cloud_identities == ("cloud", "cloud-2", "cloud-3")
    for name in policy.cloud_identities:
        assert policy.allows(name, DEVICE, SUB, "tcu/+/status")
        assert policy.allows(name, DEVICE, PUB, f"tcu/{CAR}/commands")
    for name in ("cloud-4", "cloud-1", "cloud-02", "cloudy"):  # beyond the count, or not a cloud identity at all
        assert not policy.allows(name, DEVICE, SUB, "tcu/+/status")
        assert not policy.allows(name, DEVICE, PUB, f"tcu/{CAR}/commands")
    assert not policy.allows("operator-2", DEVICE, PUB, f"tcu/{CAR}/commands")
    assert policy.allows("operator-2", DEVICE, PUB, f"sim/{CAR}/control")
    with pytest.raises(ValueError, match="clouds"):
        AclPolicy(clouds=0)
    with pytest.raises(ValueError, match="named identities"):
        AclPolicy(named={"cloud-2": ()})  # a cloud identity's rights come from `clouds`, not from `named`


def test_app_acl_file_uses_the_username_not_the_client_id() -> None:
    lines = AclPolicy().render_app_acl().splitlines()
    assert [line for line in lines if not line.startswith("#")] == [
        "pattern write app/%u/requests",
        "pattern read app/%u/responses",
        "pattern read app/%u/events",
    ]
    assert "%c" not in AclPolicy().render_app_acl().replace("# %u, not %c", "")


def test_prefix_is_put_in_front_of_every_topic() -> None:
    policy = AclPolicy("fleet-a/eu/")
    assert policy.prefix == "fleet-a/eu"
    for line in (policy.render_device_acl() + policy.render_app_acl()).splitlines():
        if line.startswith(("pattern", "topic")):
            assert line.split()[2].startswith("fleet-a/eu/"), line
    assert policy.allows(CAR, DEVICE, PUB, f"fleet-a/eu/tcu/{CAR}/status")
    assert not policy.allows(CAR, DEVICE, PUB, f"tcu/{CAR}/status")


@pytest.mark.parametrize("prefix", ["$SYS", "a/+/b", "a/#", "a//b"])
def test_bad_prefixes_are_refused(prefix: str, tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        MosquittoConfig.from_pki(FleetPKI(tmp_path), topic_prefix=prefix)


CASES = [
    # (username, listener, action, topic, allowed)
    (CAR, DEVICE, PUB, f"tcu/{CAR}/status", True),
    (CAR, DEVICE, PUB, f"tcu/{CAR}/connection", True),
    (CAR, DEVICE, PUB, f"tcu/{CAR}/commands", False),
    (CAR, DEVICE, PUB, f"tcu/{OTHER}/status", False),
    (CAR, DEVICE, PUB, f"sim/{CAR}/control", False),
    (CAR, DEVICE, PUB, "app/app-1/requests", False),
    (CAR, DEVICE, PUB, f"tcu/{CAR}/+", False),
    (CAR, DEVICE, SUB, f"tcu/{CAR}/commands", True),
    (CAR, DEVICE, SUB, f"$share/g/tcu/{CAR}/commands", True),
    (CAR, DEVICE, SUB, f"sim/{CAR}/control", True),
    (CAR, DEVICE, SUB, f"tcu/{CAR}/#", False),
    (CAR, DEVICE, SUB, "tcu/+/commands", False),
    (CAR, DEVICE, SUB, "#", False),
    (CAR, DEVICE, SUB, f"tcu/{OTHER}/commands", False),
    (CAR, DEVICE, RECV, f"tcu/{CAR}/commands", True),
    (CAR, DEVICE, RECV, f"tcu/{OTHER}/commands", False),
    (CAR, DEVICE, RECV, f"tcu/{CAR}/status", False),
    ("cloud", DEVICE, SUB, "$share/cloud/tcu/+/status", True),
    ("cloud", DEVICE, SUB, "tcu/+/status", True),
    ("cloud", DEVICE, SUB, "tcu/#", False),
    ("cloud", DEVICE, PUB, f"tcu/{CAR}/commands", True),
    ("cloud", DEVICE, PUB, f"tcu/{CAR}/status", False),
    ("cloud", DEVICE, PUB, "app/app-1/responses", True),
    ("cloud", DEVICE, PUB, f"sim/{CAR}/control", False),
    ("cloud", DEVICE, RECV, "app/app-1/requests", True),
    ("operator", DEVICE, PUB, f"sim/{CAR}/control", True),
    ("operator", DEVICE, PUB, "sim/broker/fault", True),
    ("operator", DEVICE, SUB, "tcu/+/connection", True),
    ("operator", DEVICE, SUB, "tcu/+/status", False),
    ("operator", DEVICE, PUB, f"tcu/{CAR}/commands", False),
    ("app-1", APP, PUB, "app/app-1/requests", True),
    ("app-1", APP, SUB, "app/app-1/responses", True),
    ("app-1", APP, SUB, "app/app-1/events", True),
    ("app-1", APP, SUB, "app/app-2/responses", False),
    ("app-1", APP, SUB, "app/+/responses", False),
    ("app-1", APP, PUB, "app/app-2/requests", False),
    ("app-1", APP, PUB, f"tcu/{CAR}/commands", False),
    ("app-1", DEVICE, PUB, "app/app-1/requests", False),  # app rules are the app listener's only
    ("cloud", APP, PUB, f"tcu/{CAR}/commands", False),  # and cloud rules the device listener's only
    ("+", DEVICE, SUB, "tcu/+/commands", False),  # a wildcard username never widens a pattern
    ("#", APP, SUB, "app/#", False),
    (CAR, DEVICE, SUB, "$SYS/#", False),
]


@pytest.mark.parametrize(("username", "listener", "action", "topic", "allowed"), CASES)
def test_policy(username: str, listener: ListenerKind, action: AclAction, topic: str, allowed: bool) -> None:
    assert AclPolicy().allows(username, listener, action, topic) is allowed


def test_named_identities_get_only_their_grants() -> None:
    policy = AclPolicy(named={"monitor": (Grant(GrantAccess.READ, "tcu/+/connection"),)})
    assert policy.allows("monitor", DEVICE, SUB, "tcu/+/connection")
    assert not policy.allows("monitor", DEVICE, SUB, "tcu/+/status")
    assert not policy.allows("tester", DEVICE, SUB, "tcu/+/connection")
    assert "user monitor\ntopic read tcu/+/connection" in policy.render_device_acl()
    with pytest.raises(ValueError, match="named identities"):
        AclPolicy(named={"cloud": ()})


@pytest.mark.parametrize(
    ("topic_filter", "topic", "matches"),
    [
        ("a/+/c", "a/b/c", True),
        ("a/+/c", "a/b/d", False),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("#", "a/b", True),
        ("a/+", "a/b/c", False),
        ("a/b", "a/b/c", False),
        ("+/+", "a", False),
    ],
)
def test_topic_matches(topic_filter: str, topic: str, matches: bool) -> None:
    assert topic_matches(topic_filter, topic) is matches


@pytest.mark.parametrize(
    ("grant", "requested", "covered"),
    [
        ("a/+/c", "a/b/c", True),
        ("a/+/c", "a/+/c", True),
        ("a/b/c", "a/+/c", False),
        ("a/#", "a/+/c", True),
        ("a/#", "a/#", True),
        ("a/+", "a/#", False),
        ("#", "#", True),
        ("a/b", "a/b/c", False),
        ("a/b/c", "a/b", False),
    ],
)
def test_filter_covers(grant: str, requested: str, covered: bool) -> None:
    assert filter_covers(grant, requested) is covered


def test_password_hash_format_and_verification() -> None:
    hashed = hash_password("s3cret!", iterations=101, salt=b"0123456789ab")
    assert hashed.startswith("$7$101$MDEyMzQ1Njc4OWFi$")  # iterations, base64 salt; the digest is
    assert len(base64.b64decode(hashed.rsplit("$", 1)[1])) == 64  # checked against mosquitto_passwd below
    assert verify_password("s3cret!", hashed)
    assert not verify_password("s3cret", hashed)
    assert not verify_password("s3cret!", "$6$abc$def")
    assert not verify_password("s3cret!", "$7$x$y$z")
    assert hash_password("a") != hash_password("a")  # fresh salt every time


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd not installed")
def test_hashes_match_mosquitto_passwd(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.touch()
    subprocess.run(["mosquitto_passwd", "-b", str(path), "app-1", "pässword"], check=True, capture_output=True)
    theirs = read_password_file(path)["app-1"]
    assert theirs.startswith("$7$")
    assert verify_password("pässword", theirs)
    _, _, iterations, salt, _ = theirs.split("$")
    ours = hash_password("pässword", iterations=int(iterations), salt=base64.b64decode(salt))
    assert ours == theirs


@pytest.mark.parametrize("name", ["cloud", "cloud-2", "operator", "server", "App", "a:b", "a b", "", "app/1", CAR])
def test_app_usernames_cannot_be_services_cars_or_unsafe(name: str) -> None:
    with pytest.raises(InvalidIdentityName):
        validate_app_username(name)


def test_write_config(tmp_path: Path) -> None:
    pki = FleetPKI(tmp_path / "pki")
    config = MosquittoConfig.from_pki(pki, port=18883, app_port=18884, run_as_user="tester")
    files = write_config(tmp_path / "broker", config, app_users={"app-1": "pw1"})

    text = files.config.read_text()
    assert text.startswith("# tcu-sim Mosquitto configuration")
    lines = text.splitlines()
    assert lines[2] == "per_listener_settings true"
    for expected in (
        "user tester",
        f"persistence_location {files.persistence_dir}/",
        "listener 18883 127.0.0.1",
        "require_certificate true",
        "use_identity_as_username true",
        f"cafile {pki.ca_cert_path}",
        f"crlfile {pki.crl_path}",
        f"acl_file {files.device_acl}",
        "listener 18884 127.0.0.1",
        f"password_file {files.passwords}",
        f"acl_file {files.app_acl}",
        "use_username_as_clientid true",
        "allow_anonymous false",
    ):
        assert expected in lines, expected
    device, app = text.split("listener 18884")
    # SPEC §7: on the device listener the client id is the certificate's CN, whatever the CONNECT says.
    assert device.index("use_identity_as_username true") < device.index("use_username_as_clientid true")
    assert "use_username_as_clientid true" in app
    assert "require_certificate" not in app
    assert pki.crl_path.exists()  # Mosquitto refuses to start with a missing crlfile
    assert files.persistence_dir.is_dir()
    assert stat.S_IMODE(files.passwords.stat().st_mode) == 0o600
    assert verify_password("pw1", read_password_file(files.passwords)["app-1"])
    assert "pw1" not in files.passwords.read_text()

    # Regenerating without app_users keeps the logins.
    write_config(tmp_path / "broker", config.model_copy(update={"app_port": None}))
    assert verify_password("pw1", read_password_file(files.passwords)["app-1"])
    assert "listener 18884" not in files.config.read_text()


def test_config_is_validated(tmp_path: Path) -> None:
    pki = FleetPKI(tmp_path)
    with pytest.raises(ValidationError):
        MosquittoConfig.from_pki(pki, port=0)
    with pytest.raises(ValidationError):
        MosquittoConfig.from_pki(pki, unknown_setting=True)
    with pytest.raises(ValidationError):
        MosquittoConfig.from_pki(pki, run_as_user="root\nlistener 1883")
