"""R14-R16 over MQTT: the free year from the registration day, the reminder mails (and infotainment notices) at
30 days, 15 days, 48 hours and at the end, renewals, the 14-day withdrawal, and the licence staying with the car
when it is sold — months passing on the virtual clock shared by the cloud and the cars."""

from __future__ import annotations

import datetime as dt

import pytest
from rules_kit import (
    DAY,
    FREE_YEAR_ENDS,
    HOUR,
    RULES_FLEET,
    advance_to,
    garage,
    jump_to,
    next_push,
    operator_control,
    refusal,
    relogin,
    wait_notification,
)

from broker.cloud import add_years
from tcu_sim.protocol import ErrorCode
from tcu_sim.testing import AppUserFactory, SimBroker, SimClock, SimCloud, SimFleet, SimUser

REGISTERED = dt.datetime(2025, 3, 1, tzinfo=dt.UTC).timestamp()
REMINDER_SUBJECTS = ("Your CUPRA CONNECT services end soon", "Your CUPRA CONNECT services have ended")


async def _reminders(user: SimUser, vin: str) -> list[str]:
    """The bodies of the licence reminder mails the user got about the car, oldest first."""
    return [m.body for m in await user.app.mailbox() if m.subject in REMINDER_SUBJECTS and vin in m.body]


async def test_r14_a_free_year_from_registration_reminders_at_30d_15d_48h_and_the_end_and_renewal_extends_it(
    fleet: SimFleet, cloud: SimCloud, clock: SimClock, app_user_factory: AppUserFactory
) -> None:
    leon, ateca = fleet.car("leon"), fleet.car("ateca")
    owner = await app_user_factory("owner@example.com")
    await owner.enrol(leon)
    await owner.enrol(ateca)
    licence = await owner.app.licence_status(leon.vin)
    assert (licence["starts_at"], licence["ends_at"], licence["valid"]) == (REGISTERED, FREE_YEAR_ENDS, True)

    stages = [(30 * DAY, "in 30 days", "end in 30 days"), (15 * DAY, "in 15 days", "end in 15 days"),
              (2 * DAY, "in 48 hours", "end in 48 hours")]
    for n, (before_end, in_mail, in_car) in enumerate(stages):
        await advance_to(clock, FREE_YEAR_ENDS - before_end - HOUR)
        await cloud.handler.remind_now()  # the job that also runs every hour on the clock
        await relogin(owner)
        assert len(await _reminders(owner, leon.vin)) == n, f"a reminder came before {in_mail}"
        await advance_to(clock, FREE_YEAR_ENDS - before_end + HOUR)
        await cloud.handler.remind_now()
        for car in (leon, ateca):
            sent = await _reminders(owner, car.vin)
            assert len(sent) == n + 1, sent  # each reminder once, whether the hourly job or this call sent it
            assert in_mail in sent[-1]
            await wait_notification(car, in_car)  # in the infotainment too

    # A renewal (of the Leon, two days before its end) extends the term from its end: no "ended" reminder, and
    # the services go on. The Ateca's services end, with a last reminder.
    renewed = await owner.app.licence_renew(leon.vin, 1)
    assert renewed["ends_at"] == add_years(FREE_YEAR_ENDS, 1)
    await advance_to(clock, FREE_YEAR_ENDS + HOUR)
    await cloud.handler.remind_now()
    await relogin(owner)
    assert len(await _reminders(owner, leon.vin)) == 3
    ended = await _reminders(owner, ateca.vin)
    assert len(ended) == 4
    assert "end today" in ended[-1]
    await wait_notification(ateca, "have ended")
    assert await owner.command(leon, "lock", expect="succeeded") == "succeeded"
    assert (await refusal(owner.app.honk_and_flash(ateca.vin)))[0] == ErrorCode.LICENSE_EXPIRED


async def test_r15_a_purchase_is_refunded_within_14_days_of_activation_and_after_that_runs_to_its_end(
    fleet: SimFleet, clock: SimClock, app_user_factory: AppUserFactory
) -> None:
    leon = fleet.car("leon")
    owner = await app_user_factory("owner@example.com")
    await owner.enrol(leon)
    extended = add_years(FREE_YEAR_ENDS, 1)

    # Cancelled 14 days less an hour after the purchase: refunded, the term is back where it was.
    assert (await owner.app.licence_renew(leon.vin, 1))["ends_at"] == extended
    await clock.advance(14 * DAY - HOUR)
    cancelled = await owner.app.licence_cancel(leon.vin)
    assert cancelled["ends_at"] == FREE_YEAR_ENDS
    assert [p["refunded"] for p in cancelled["purchases"]] == [True]
    assert "Your CUPRA CONNECT purchase was cancelled" in [m.subject for m in await owner.app.mailbox()]

    # Bought again and kept 14 days and an hour: too late to cancel; it runs to the end of its term.
    await owner.app.licence_renew(leon.vin, 1)
    await clock.advance(14 * DAY + HOUR)
    code, _ = await refusal(owner.app.licence_cancel(leon.vin))
    assert code == ErrorCode.CANCELLATION_PERIOD_OVER
    licence = await owner.app.licence_status(leon.vin)
    assert licence["ends_at"] == extended
    assert [p["refunded"] for p in licence["purchases"]] == [True, False]
    await advance_to(clock, FREE_YEAR_ENDS + HOUR)  # past the end of the free year: still running
    await relogin(owner)
    assert await owner.command(leon, "lock", expect="succeeded") == "succeeded"
    await leon.wait_for(locked=True)


@pytest.mark.tcu_fleet(
    {
        **RULES_FLEET,
        "groups": [
            {"name": "leon", "count": 1, "model": "leon", "equipment": "media_system", "registered_at": "2025-03-01"},
            {"name": "formentor", "count": 1, "model": "formentor", "equipment": "media_system",
             "registered_at": "2025-09-01"},
        ],
    }
)
async def test_r16_the_licence_stays_with_the_car_when_it_is_sold_and_the_new_owner_uses_it_until_it_ends(
    fleet: SimFleet, cloud: SimCloud, clock: SimClock, mqtt_broker: SimBroker, app_user_factory: AppUserFactory
) -> None:
    leon, formentor = fleet.car("leon"), fleet.car("formentor")
    seller = await app_user_factory("seller@example.com")
    buyer = await app_user_factory("buyer@example.com")
    await seller.enrol(leon)
    await seller.enrol(formentor)
    formentor_ends = (await seller.app.licence_status(formentor.vin))["ends_at"]

    # A year bought for the Leon is the Leon's: the seller's other car does not get it.
    extended = add_years(FREE_YEAR_ENDS, 1)
    assert (await seller.app.licence_renew(leon.vin, 1))["ends_at"] == extended
    assert (await seller.app.licence_status(formentor.vin))["ends_at"] == formentor_ends

    # The sale: a factory reset in the Leon's infotainment (by the operator, over `sim/{vin}/control`) takes it
    # out of the seller's account.
    await operator_control(mqtt_broker, leon, "factory_reset")
    told = await next_push(seller.app, "vehicle_changed", lambda d: d.get("event") == "removed")
    assert told == {"vin": leon.vin, "event": "removed", "reason": "factory_reset"}
    assert await garage(seller) == {formentor.vin: ("primary", "active")}
    assert (await refusal(seller.app.licence_cancel(leon.vin)))[0] == ErrorCode.VEHICLE_NOT_FOUND

    # The new owner finds the car's licence as it was, with the purchase, and uses it...
    await buyer.enrol(leon)
    licence = await buyer.app.licence_status(leon.vin)
    assert (licence["starts_at"], licence["ends_at"], len(licence["purchases"])) == (REGISTERED, extended, 1)
    assert (await refusal(buyer.app.licence_cancel(leon.vin)))[0] == ErrorCode.INVALID_REQUEST  # not theirs
    assert await buyer.command(leon, "unlock", expect="succeeded") == "succeeded"

    # ...until it ends (a year later: one jump of the clock to an hour before the end, then past it).
    await jump_to(clock, extended - HOUR)
    await relogin(buyer)
    assert await buyer.command(leon, "lock", expect="succeeded") == "succeeded"
    await clock.advance(2 * HOUR)
    assert (await refusal(buyer.app.unlock(leon.vin, buyer.spin)))[0] == ErrorCode.LICENSE_EXPIRED
    assert (await cloud.registry.get_licence(formentor.vin)) is not None
