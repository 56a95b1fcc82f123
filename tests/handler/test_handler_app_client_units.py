"""Pure parts of the app side: one typed error per error code, broker URLs, the session file, the client
directory of the handler (over a SQLite registry)."""

from __future__ import annotations

import dataclasses
import stat
from pathlib import Path

import click
import pytest

from broker.handler import ClientDirectory
from broker.registry import CommandRecord, UserRecord, open_registry
from tcu_sim.app import (
    AccessDenied,
    AppClient,
    AppRequestError,
    AuthenticationRequired,
    RateLimited,
    RequestRefused,
    ServiceUnavailable,
    SpinError,
    SpinIncorrect,
    SpinLocked,
    error_from_app_error,
)
from tcu_sim.cli._broker_url import parse_broker_url
from tcu_sim.cli.app import SessionFile
from tcu_sim.clock import VirtualClock
from tcu_sim.protocol import AppError, CommandState, ErrorCode, ProtocolError

START = 1_767_225_600.0

_FAMILIES = (AuthenticationRequired, RequestRefused, AccessDenied, SpinError, ServiceUnavailable, RateLimited)


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_error_code_has_its_own_typed_error_in_one_family(code: ErrorCode) -> None:
    error = error_from_app_error(AppError(code=code, message="m"), "r-1")
    assert isinstance(error, AppRequestError)
    assert error.code is code
    assert error.request_id == "r-1"
    assert sum(isinstance(error, family) for family in _FAMILIES) == 1
    assert str(error) == f"{code.value}: m"


def test_error_details_are_attributes() -> None:
    tries = error_from_app_error(AppError(code=ErrorCode.SPIN_INCORRECT, message="m", remaining_tries=2))
    locked = error_from_app_error(AppError(code=ErrorCode.SPIN_LOCKED, message="m", locked_seconds=300))
    limited = error_from_app_error(AppError(code=ErrorCode.RATE_LIMITED, message="m", retry_after_s=1.5))
    assert isinstance(tries, SpinIncorrect)
    assert tries.remaining_tries == 2
    assert isinstance(locked, SpinLocked)
    assert locked.locked_seconds == 300
    assert isinstance(limited, RateLimited)
    assert limited.retry_after_s == 1.5


def test_a_client_id_unfit_for_a_topic_is_refused_before_connecting() -> None:
    for bad in ("", "a/b", "a+b", "#", "$share"):
        with pytest.raises(ProtocolError):
            AppClient("localhost", 1883, bad)


def test_client_repr_shows_no_token() -> None:
    client = AppClient("localhost", 1883, "app-1", "mqtt-secret", token="tok-secret-123")
    assert "tok-secret-123" not in repr(client)
    assert "mqtt-secret" not in repr(client)
    assert "logged in" in repr(client)


def test_broker_urls() -> None:
    url = parse_broker_url("mqtts://broker.example:8884")
    assert (url.host, url.port, url.tls) == ("broker.example", 8884, True)
    assert parse_broker_url("mqtt://localhost").port == 1883
    assert parse_broker_url("mqtts://localhost", default_port=8884).port == 8884
    with_login = parse_broker_url("mqtt://app-1:p%40ss@localhost:1883")
    assert (with_login.username, with_login.password) == ("app-1", "p@ss")
    assert "p@ss" not in repr(with_login)
    for bad in ("http://x", "mqtt://", "mqtt://h:99999", "mqtt://h/path"):
        with pytest.raises(click.BadParameter):
            parse_broker_url(bad)


def test_session_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "tcu-sim" / "session.json"
    session = SessionFile.read(path)
    assert session.data == {}
    session.data["token"] = "t"
    session.write()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert SessionFile.read(path).get("token") == "t"
    path.write_text("[1, 2]")
    with pytest.raises(click.ClickException):
        SessionFile.read(path)


async def test_client_directory_is_bounded_kept_in_the_registry_and_prefers_the_requesting_client(
    tmp_path: Path,
) -> None:
    clock = VirtualClock(START)
    async with open_registry(f"sqlite://{tmp_path}/directory.db") as registry:
        for user in ("u1", "u2"):
            await registry.create_user(UserRecord(user, f"{user}@example.com", "h", "h", True, None, START))
        directory = ClientDirectory(registry, clock, clients_per_user=2)
        for client in ("a", "b", "c"):
            await directory.bind_user("u1", client)
            await clock.advance(1)
        assert await directory.clients_for_user("u1") == ["c", "b"]  # newest first, the oldest dropped
        await directory.bind_user("u1", "b")  # written again only after a while
        assert await directory.clients_for_user("u1") == ["c", "b"]
        await clock.advance(directory.rebind_after_s)
        await directory.bind_user("u1", "b")
        assert await directory.clients_for_user("u1") == ["b", "c"]
        # Another process (a new directory on the same registry) finds the same clients.
        assert await ClientDirectory(registry, clock).clients_for_user("u1") == ["b", "c"]
        command = CommandRecord(
            "cmd-1", "u1", "r1", "VSS", "lock", {}, CommandState.QUEUED, START, START + 60, START, client_id="a"
        )
        assert await directory.clients_for_command(command) == ["a"]
        legacy = dataclasses.replace(command, client_id=None)  # stored before commands kept their client
        assert await directory.clients_for_command(legacy) == ["b", "c"]
        assert await directory.clients_for_user("u2") == []


def test_the_app_api_doc_lists_every_op_the_cloud_answers() -> None:
    from broker.handler import AppRequests
    from tcu_sim.app import AppOp

    doc = (Path(__file__).resolve().parents[2] / "docs" / "app-api.md").read_text(encoding="utf-8")
    documented = {line.split("`")[1] for line in doc.splitlines() if line.startswith("| `")}
    # Only the op table is read: no services needed.
    answered = AppRequests(
        services=None, sender=None, directory=None, stats=None, events=None, clock=None  # type: ignore[arg-type]
    )
    push_types = {"command_progress", "vehicle_changed", "notification", "mail", "alert", "roadside"}
    assert documented - push_types == {op.value for op in AppOp} == answered.ops
