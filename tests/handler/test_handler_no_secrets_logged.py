"""No password, S-PIN, session token or pairing code appears in any log line or error, whatever the flow:
structlog events (captured before rendering) and stdlib logging (paho/aiomqtt at DEBUG) are both searched."""

from __future__ import annotations

import logging
import re

import pytest
import structlog
from handler_kit import ATECA_RADIO, LEON, Stack, enrol_tkov, verification_code

from tcu_sim.app import AppApiError, AppClient

PASSWORD = "Sekr3t-Passw0rd-xyzzy"
NEW_PASSWORD = "An0ther-Sekr3t-plugh"
SPIN = "8264"
NEW_SPIN = "5917"
WRONG_SPIN = "3094"


async def _expect_error(call: object, errors: list[AppApiError]) -> None:
    try:
        await call  # type: ignore[misc]  # a coroutine
    except AppApiError as exc:
        errors.append(exc)
    else:  # pragma: no cover - the flow below only sends failing calls here
        raise AssertionError("expected an error")


async def _flows(stack: Stack, app: AppClient, errors: list[AppApiError]) -> list[str]:
    """Every path that handles a secret; the secrets it produced (tokens, codes)."""
    email = "secretive@example.com"
    await app.register(email, PASSWORD, SPIN)
    await _expect_error(app.register("x@example.com", PASSWORD, "1234"), errors)  # S-PIN policy
    await _expect_error(app.login(email, "wrong-" + PASSWORD), errors)
    await app.login(email, PASSWORD)
    mails = await app.mailbox()
    code = verification_code(mails)
    await app.verify_email(code)
    await _expect_error(app.verify_email(code), errors)  # used once
    login = await app.login(email, PASSWORD)
    secrets = [login.token, code]
    async with stack.car(LEON) as leon, stack.car(ATECA_RADIO) as ateca:
        await enrol_tkov(stack, app, leon, email)
        await _expect_error(app.lock(LEON, WRONG_SPIN), errors)
        command_id = await app.lock(LEON, SPIN)
        await leon.next_command(1)
        assert command_id
        await app.change_spin(SPIN, NEW_SPIN)
        added = await app.add_vehicle(ATECA_RADIO)
        assert added.pairing_code is not None
        secrets.append(added.pairing_code)
        before = stack.stats.applied["events"]
        await ateca.send_event({"type": "pairing_code_entered", "at": stack.clock.now(), "pairing_code": "00000000"})
        await ateca.send_event(
            {"type": "pairing_code_entered", "at": stack.clock.now(), "pairing_code": added.pairing_code}
        )
        # An infotainment login with the wrong password, then the right one (R7).
        await leon.send_event(
            {"type": "infotainment_login", "at": stack.clock.now(), "email": email, "password": "bad-" + PASSWORD}
        )
        await leon.send_event(
            {"type": "infotainment_login", "at": stack.clock.now(), "email": email, "password": PASSWORD}
        )
        await stack.wait(lambda s: s.applied["events"] >= before + 4)
    await app.change_password(PASSWORD, NEW_PASSWORD)
    await app.logout()
    await _expect_error(app.list_vehicles(), errors)  # logged out
    return secrets


async def test_no_secret_in_any_log_line_or_error(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    errors: list[AppApiError] = []
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="mqtt")  # paho, under aiomqtt's logger (WARNING by default)
    with structlog.testing.capture_logs() as events:
        async with stack.app() as app:
            produced = await _flows(stack, app, errors)
    secrets = [PASSWORD, NEW_PASSWORD, SPIN, NEW_SPIN, WRONG_SPIN, *produced]
    assert len(events) > 50  # the flows did log
    assert {"app.answered", "car.event", "command.sent", "audit"} <= {e["event"] for e in events}
    assert len(errors) == 5
    assert "PUBLISH" in caplog.text  # the MQTT clients' DEBUG lines were captured too
    texts = [repr(e) for e in events] + [caplog.text] + [f"{e!s} {e!r}" for e in errors]
    for secret in secrets:
        # A 4-digit S-PIN or 8-digit pairing code may occur by chance inside a hex id or a number: only a
        # match standing on its own counts.
        pattern = re.compile(rf"(?<![0-9a-fA-F]){re.escape(secret)}(?![0-9a-fA-F])" if secret.isdigit()
                             else re.escape(secret))
        for text in texts:
            assert not pattern.search(text), f"a secret leaked into: {text[:300]}"
