"""No password, S-PIN, token, pairing code or verification code in a log line, an audit entry, an error
message or a repr — through a whole life of an account: register, verify, log in, enrol, wrong and right
S-PINs, in-car login, password and S-PIN changes."""

from __future__ import annotations

import json

import pytest
import structlog
from cloud_testkit import ATECA_RADIO, LEON, verification_code

from broker.cloud import CloudError, CloudServices, ServerSecret

PASSWORD = "Tr0ub4dor&3-horse"
NEW_PASSWORD = "staple battery 42!"
SPIN = "4826"
NEW_SPIN = "3917"
WRONG_SPIN = "5063"


async def test_no_secret_reaches_logs_audit_errors_or_reprs(cloud: CloudServices) -> None:
    errors: list[CloudError] = []

    async def refused(coro: object) -> None:
        with pytest.raises(CloudError) as info:
            await coro  # type: ignore[misc]  # every caller passes a coroutine
        errors.append(info.value)

    with structlog.testing.capture_logs() as logs:
        await cloud.accounts.register("ana@example.com", PASSWORD, SPIN)
        await cloud.accounts.register("ana@example.com", PASSWORD, SPIN)
        code = verification_code(await cloud.accounts.mailbox_for("ana@example.com"))
        await cloud.accounts.verify_email(code)
        await refused(cloud.accounts.login("ana@example.com", PASSWORD + "x"))
        login = await cloud.accounts.login("ana@example.com", PASSWORD)
        token = login.token
        added = await cloud.garage.add_vehicle(token, ATECA_RADIO, accept_terms=True)
        assert added.pairing_code is not None
        wrong_code = f"{(int(added.pairing_code) + 7) % 10**8:08d}"
        await refused(cloud.garage.complete_by_pairing_code(ATECA_RADIO, wrong_code))
        await cloud.garage.complete_by_pairing_code(ATECA_RADIO, added.pairing_code)
        await refused(cloud.garage.complete_by_infotainment_login(LEON, "ana@example.com", NEW_PASSWORD))
        await cloud.garage.complete_by_infotainment_login(LEON, "ana@example.com", PASSWORD)
        await refused(cloud.commands.request(token, "r1", LEON, "unlock", spin=WRONG_SPIN))
        await refused(cloud.commands.request(token, "r2", LEON, "unlock", spin=WRONG_SPIN))
        await refused(cloud.commands.request(token, "r3", LEON, "unlock", spin=WRONG_SPIN))
        await refused(cloud.commands.request(token, "r4", LEON, "unlock", spin=SPIN))
        await refused(cloud.accounts.change_password(token, NEW_PASSWORD, PASSWORD))
        await cloud.accounts.change_password(token, PASSWORD, NEW_PASSWORD)
        await refused(cloud.accounts.change_spin(token, SPIN, "1234"))
        await refused(cloud.accounts.change_spin(token, SPIN, NEW_SPIN))  # still locked
        second = (await cloud.accounts.login("ana@example.com", NEW_PASSWORD)).token
        await cloud.accounts.logout(second)
        await refused(cloud.accounts.authenticate(second))
        await refused(cloud.accounts.verify_email(code))

    secrets = [PASSWORD, NEW_PASSWORD, SPIN, NEW_SPIN, WRONG_SPIN, token, second, code, added.pairing_code]
    audit = await cloud.registry.list_audit(limit=1000)
    assert {e.action for e in audit} >= {
        "login", "spin.failed", "spin.locked", "enrolment.started", "enrolment.completed", "password.changed",
    }
    places = {
        "logs": json.dumps(logs, default=str),
        "audit": json.dumps([(e.action, e.outcome, e.user_id, e.vin, e.detail) for e in audit], default=str),
        "errors": " ".join(f"{e} {e!r} {e.to_app_error().model_dump_json()}" for e in errors),
        "reprs": " ".join(repr(x) for x in (login, added, await cloud.accounts.authenticate(token), cloud,
                                               cloud.ctx, await cloud.registry.get_user_by_email("ana@example.com"))),
    }
    for where, text in places.items():
        for secret in secrets:
            assert secret not in text, f"a secret leaked into the {where}"
    assert len(errors) == 12


def test_the_server_secret_never_shows() -> None:
    secret = ServerSecret(b"k" * 32)
    assert "k" * 8 not in repr(secret)
    assert repr(secret) == "ServerSecret(***)"
    with pytest.raises(ValueError, match="16 bytes"):
        ServerSecret(b"short")
