"""Accounts: registration and e-mail verification (R1), S-PIN policy and storage (R2), S-PIN change (R4),
sessions, password change and re-authentication (R17)."""

from __future__ import annotations

import pytest
from cloud_testkit import LEON, PASSWORD, SPIN, enrol, new_user, owner, verification_code

from broker.cloud import (
    CloudServices,
    InvalidRequest,
    SessionExpired,
    SpinIncorrect,
    SpinPolicyViolation,
    Unauthenticated,
    UserNotVerified,
    spin_policy_problem,
)
from tcu_sim.clock import VirtualClock


async def test_r1_register_sends_a_verification_mail_and_verifying_unlocks_enrolment(cloud: CloudServices) -> None:
    token = await new_user(cloud, "ana@example.com", verify=False)
    with pytest.raises(UserNotVerified):
        await cloud.garage.add_vehicle(token, LEON, accept_terms=True)
    mails = await cloud.accounts.mailbox(token)
    assert [m.subject for m in mails] == ["Verify your CUPRA ID"]
    await cloud.accounts.verify_email(verification_code(mails))
    assert (await cloud.garage.add_vehicle(token, LEON, accept_terms=True)).vin == LEON


async def test_r1_a_verification_code_works_once_and_expires(cloud: CloudServices, clock: VirtualClock) -> None:
    await cloud.accounts.register("ben@example.com", PASSWORD, SPIN)
    code = verification_code(await cloud.accounts.mailbox_for("ben@example.com"))
    with pytest.raises(InvalidRequest):
        await cloud.accounts.verify_email("not-the-code-at-all")
    await cloud.accounts.verify_email(code)
    with pytest.raises(InvalidRequest):
        await cloud.accounts.verify_email(code)

    await cloud.accounts.register("cy@example.com", PASSWORD, SPIN)
    late = verification_code(await cloud.accounts.mailbox_for("cy@example.com"))
    await clock.advance(cloud.ctx.config.email_code_ttl_s + 1)
    with pytest.raises(InvalidRequest):
        await cloud.accounts.verify_email(late)


async def test_r1_registering_a_taken_address_reveals_nothing_and_tells_its_owner(cloud: CloudServices) -> None:
    await new_user(cloud, "dora@example.com")
    await cloud.accounts.register("new@example.com", PASSWORD, SPIN)
    # Same address in other case: the same reply (none), no second account, a warning to the owner instead.
    await cloud.accounts.register("DORA@Example.com", "another password", "2580")
    subjects = [m.subject for m in await cloud.accounts.mailbox_for("dora@example.com")]
    assert subjects == ["Verify your CUPRA ID", "Someone tried to create a CUPRA ID with your address"]
    with pytest.raises(Unauthenticated):
        await cloud.accounts.login("dora@example.com", "another password")
    assert (await cloud.accounts.login("Dora@example.COM", PASSWORD)).email == "dora@example.com"


async def test_r1_re_registering_an_unverified_address_sends_a_fresh_link(cloud: CloudServices) -> None:
    await cloud.accounts.register("eve@example.com", PASSWORD, SPIN)
    await cloud.accounts.register("eve@example.com", PASSWORD, SPIN)
    mails = await cloud.accounts.mailbox_for("eve@example.com")
    assert [m.subject for m in mails] == ["Verify your CUPRA ID"] * 2
    await cloud.accounts.verify_email(verification_code(mails))


@pytest.mark.parametrize(
    "spin", ["0000", "1111", "9999", "1234", "4321", "0123", "9876", "6789", "7890", "9012", "3210", "2109", "1212",
             "123", "12345", "12a4", "", "\uff11\uff12\uff13\uff14"],  # the last: full-width digits
)
def test_r2_trivial_or_malformed_spins_are_refused(spin: str) -> None:
    assert spin_policy_problem(spin) is not None


@pytest.mark.parametrize("spin", ["4711", "2580", "1357", "8024", "1122", "0815"])
def test_r2_ordinary_spins_are_accepted(spin: str) -> None:
    assert spin_policy_problem(spin) is None


async def test_r2_register_refuses_a_trivial_spin_and_stores_only_a_keyed_hash(cloud: CloudServices) -> None:
    with pytest.raises(SpinPolicyViolation):
        await cloud.accounts.register("fay@example.com", PASSWORD, "1234")
    await cloud.accounts.register("fay@example.com", PASSWORD, "4711")
    user = await cloud.registry.get_user_by_email("fay@example.com")
    assert user is not None
    assert len(user.spin_hash) == 64
    assert int(user.spin_hash, 16) >= 0
    assert user.spin_hash == cloud.ctx.secret.spin_hash(user.id, "4711")
    assert PASSWORD not in user.password_hash
    assert user.password_hash.startswith("$argon2id$")
    assert "spin_hash" not in repr(user)
    assert "password_hash" not in repr(user)


async def test_register_refuses_bad_addresses_and_short_passwords(cloud: CloudServices) -> None:
    for email in ["no-at-sign", "a@b", "two@@example.com", "x" * 300 + "@example.com"]:
        with pytest.raises(InvalidRequest):
            await cloud.accounts.register(email, PASSWORD, SPIN)
    with pytest.raises(InvalidRequest):
        await cloud.accounts.register("gil@example.com", "short", SPIN)


async def test_login_wrong_password_and_unknown_address_get_the_same_error(cloud: CloudServices) -> None:
    await new_user(cloud, "hal@example.com")
    with pytest.raises(Unauthenticated) as wrong_password:
        await cloud.accounts.login("hal@example.com", "wrong password")
    with pytest.raises(Unauthenticated) as unknown:
        await cloud.accounts.login("nobody@example.com", PASSWORD)
    assert wrong_password.value.to_app_error() == unknown.value.to_app_error()


async def test_sessions_are_random_hashed_and_revocable(cloud: CloudServices) -> None:
    token = await new_user(cloud, "ida@example.com")
    second = (await cloud.accounts.login("ida@example.com", PASSWORD)).token
    assert token != second
    assert len(token) >= 40
    me = await cloud.accounts.authenticate(token)
    assert me.user.email == "ida@example.com"
    assert await cloud.registry.get_session(token) is None  # stored only hashed
    await cloud.accounts.logout(token)
    with pytest.raises(Unauthenticated):
        await cloud.accounts.authenticate(token)
    with pytest.raises(Unauthenticated):
        await cloud.accounts.logout(token)
    assert (await cloud.accounts.authenticate(second)).user_id == me.user_id
    for bad in [None, "", "x" * 1000, "unknown-token"]:
        with pytest.raises(Unauthenticated):
            await cloud.accounts.authenticate(bad)


async def test_r17_changing_the_password_ends_every_other_session(cloud: CloudServices) -> None:
    phone = await new_user(cloud, "jo@example.com")
    lost_phone = (await cloud.accounts.login("jo@example.com", PASSWORD)).token
    tablet = (await cloud.accounts.login("jo@example.com", PASSWORD)).token
    with pytest.raises(InvalidRequest):
        await cloud.accounts.change_password(phone, "not the old one", "brand new password")
    assert await cloud.accounts.change_password(phone, PASSWORD, "brand new password") == 2
    for token in (lost_phone, tablet):
        with pytest.raises(Unauthenticated):
            await cloud.accounts.authenticate(token)
    await cloud.accounts.authenticate(phone)
    with pytest.raises(Unauthenticated):
        await cloud.accounts.login("jo@example.com", PASSWORD)
    await cloud.accounts.login("jo@example.com", "brand new password")


@pytest.mark.parametrize("minutes", [5, 10, 15])
async def test_r17_reauthentication_after_the_chosen_idle_time(
    cloud: CloudServices, clock: VirtualClock, minutes: int
) -> None:
    token = await new_user(cloud, "kim@example.com")
    await cloud.accounts.set_reauth_timeout(token, minutes)
    await clock.advance(minutes * 60 - 1)
    await cloud.accounts.authenticate(token)  # activity: the idle time starts again
    await clock.advance(minutes * 60)
    await cloud.accounts.authenticate(token)
    await clock.advance(minutes * 60 + 1)
    with pytest.raises(SessionExpired) as expired:
        await cloud.accounts.authenticate(token)
    assert expired.value.code.value == "SESSION_EXPIRED"
    with pytest.raises(SessionExpired):  # it stays expired: only the password opens a new session
        await cloud.accounts.authenticate(token)
    fresh = (await cloud.accounts.login("kim@example.com", PASSWORD)).token
    await cloud.accounts.authenticate(fresh)


async def test_r17_without_a_timeout_an_idle_session_lives_until_its_maximum_age(
    cloud: CloudServices, clock: VirtualClock
) -> None:
    token = await new_user(cloud, "lee@example.com")
    await clock.advance(3600 * 24)
    await cloud.accounts.authenticate(token)
    max_age = cloud.ctx.config.session_max_age_s
    assert max_age is not None
    await clock.advance(max_age)
    with pytest.raises(SessionExpired):
        await cloud.accounts.authenticate(token)


async def test_r17_only_5_10_15_or_none_are_timeouts(cloud: CloudServices, clock: VirtualClock) -> None:
    token = await new_user(cloud, "max@example.com")
    for bad in [0, 1, 7, 20, 60, True]:
        with pytest.raises(InvalidRequest):
            await cloud.accounts.set_reauth_timeout(token, bad)
    await cloud.accounts.set_reauth_timeout(token, 5)
    await cloud.accounts.set_reauth_timeout(token, None)
    await clock.advance(3600)
    await cloud.accounts.authenticate(token)


async def test_r4_spin_change_needs_an_enrolled_car_and_the_old_spin(cloud: CloudServices) -> None:
    token = await new_user(cloud, "ned@example.com")
    with pytest.raises(InvalidRequest, match="car is enrolled"):
        await cloud.accounts.change_spin(token, SPIN, "2580")
    await enrol(cloud, token, LEON)
    with pytest.raises(SpinPolicyViolation):
        await cloud.accounts.change_spin(token, SPIN, "1111")
    with pytest.raises(SpinIncorrect) as wrong:
        await cloud.accounts.change_spin(token, "0815", "2580")
    assert wrong.value.remaining_tries == 2  # the old S-PIN counts towards the lockout (R3)
    await cloud.accounts.change_spin(token, SPIN, "2580")
    user = (await cloud.accounts.authenticate(token)).user
    await cloud.spin.verify(user, "2580")
    with pytest.raises(SpinIncorrect):
        await cloud.spin.verify(user, SPIN)


async def test_r4_a_pending_car_is_not_enough_to_change_the_spin(cloud: CloudServices) -> None:
    token = await new_user(cloud, "oli@example.com")
    await cloud.garage.add_vehicle(token, LEON, accept_terms=True)
    with pytest.raises(InvalidRequest):
        await cloud.accounts.change_spin(token, SPIN, "2580")


async def test_mailbox_shows_only_the_users_own_mail(cloud: CloudServices) -> None:
    a = await owner(cloud, "pia@example.com")
    await new_user(cloud, "quinn@example.com")
    assert {m.to for m in await cloud.accounts.mailbox(a)} == {"pia@example.com"}
