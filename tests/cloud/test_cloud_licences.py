"""Licences: free year from registration, reminders at 30 days, 15 days, 48 hours and the end (R14), renewal,
withdrawal within 14 days (R15), the licence belongs to the car (R16)."""

from __future__ import annotations

import asyncio

import pytest
from cloud_testkit import BORN, DAY, FLEET, LEON, PASSWORD, SPIN, START, enrol, new_user, owner, services

from broker.cloud import (
    CancellationPeriodOver,
    CloudServices,
    InsufficientRights,
    InvalidRequest,
    LicenseExpired,
    add_years,
)
from broker.registry import open_registry
from tcu_sim.clock import VirtualClock

FREE_END = add_years(START - 100 * DAY, 1)  # LEON and BORN were registered 100 days before START


async def _end_soon_mails(cloud: CloudServices, email: str) -> list[str]:
    return [m.body for m in await cloud.accounts.mailbox_for(email) if "CUPRA CONNECT services" in m.subject
            and ("end soon" in m.subject or "have ended" in m.subject)]


async def _relogin(cloud: CloudServices, email: str) -> str:
    return (await cloud.accounts.login(email, PASSWORD)).token


def test_add_years_keeps_the_calendar_day() -> None:
    assert add_years(START, 1) == START + 365 * DAY  # 2026-01-01 → 2027-01-01
    leap = 1_709_164_800.0  # 2024-02-29T00:00:00Z
    assert add_years(leap, 1) == 1_740_700_800.0  # 2025-02-28


async def test_r14_the_free_year_starts_on_the_registration_day(cloud: CloudServices) -> None:
    token = await owner(cloud, "ana@example.com", LEON)
    status = await cloud.licences.status(token, LEON)
    assert status.starts_at == START - 100 * DAY
    assert status.ends_at == FREE_END
    assert status.valid
    assert status.as_result()["purchases"] == []
    # Importing the manifest again never resets a licence.
    await cloud.vehicles.import_vehicles(FLEET)
    assert (await cloud.licences.status(token, LEON)).ends_at == FREE_END


async def test_r14_reminders_at_30_days_15_days_48_hours_and_the_end(cloud: CloudServices, clock: VirtualClock) -> None:
    await owner(cloud, "ben@example.com", LEON)
    sent: list[tuple[str, float]] = []
    for at in [FREE_END - 31 * DAY, FREE_END - 30 * DAY, FREE_END - 29 * DAY, FREE_END - 15 * DAY,
               FREE_END - 15 * DAY + 1, FREE_END - 2 * DAY, FREE_END - DAY, FREE_END - 1, FREE_END, FREE_END + DAY]:
        await clock.advance(at - clock.now())
        sent += [(r.stage, at) for r in await cloud.licences.run_due_reminders()]
    assert sent == [("30d", FREE_END - 30 * DAY), ("15d", FREE_END - 15 * DAY), ("48h", FREE_END - 2 * DAY),
                    ("end", FREE_END)]
    bodies = await _end_soon_mails(cloud, "ben@example.com")
    assert len(bodies) == 4
    assert "in 30 days" in bodies[0]
    assert LEON in bodies[0]
    assert "today" in bodies[3]


async def test_r14_reminders_are_idempotent_across_instances(registry_url: str, clock: VirtualClock) -> None:
    async with open_registry(registry_url) as reg_a, open_registry(registry_url) as reg_b:
        cloud_a, cloud_b = services(reg_a, clock, seed=1), services(reg_b, clock, seed=2)
        await cloud_a.vehicles.import_vehicles(FLEET)
        await owner(cloud_a, "cy@example.com", LEON, BORN)
        await clock.advance(FREE_END - 30 * DAY - clock.now())
        runs = await asyncio.gather(*(c.licences.run_due_reminders() for c in (cloud_a, cloud_b, cloud_a, cloud_b)))
        assert sorted((r.vin, r.stage) for run in runs for r in run) == sorted([(LEON, "30d"), (BORN, "30d")])
        assert len(await _end_soon_mails(cloud_b, "cy@example.com")) == 2


async def test_r14_a_late_run_sends_only_the_newest_due_reminder(cloud: CloudServices, clock: VirtualClock) -> None:
    await owner(cloud, "dan@example.com", LEON)
    await clock.advance(FREE_END - 10 * DAY - clock.now())
    assert [r.stage for r in await cloud.licences.run_due_reminders()] == ["15d"]
    assert await cloud.licences.run_due_reminders() == []


async def test_r14_a_car_without_primary_user_gets_its_reminder_once_enrolled(
    cloud: CloudServices, clock: VirtualClock
) -> None:
    await clock.advance(FREE_END - 20 * DAY - clock.now())
    assert await cloud.licences.run_due_reminders() == []
    await owner(cloud, "eve@example.com", LEON)
    assert [(r.stage, r.email) for r in await cloud.licences.run_due_reminders()] == [("30d", "eve@example.com")]


async def test_r14_a_renewal_extends_the_term_and_restarts_the_reminders(
    cloud: CloudServices, clock: VirtualClock
) -> None:
    await owner(cloud, "fay@example.com", LEON)
    await clock.advance(FREE_END - 30 * DAY - clock.now())
    assert [r.stage for r in await cloud.licences.run_due_reminders()] == ["30d"]
    token = await _relogin(cloud, "fay@example.com")
    renewed = await cloud.licences.renew(token, LEON, 2)
    assert renewed.ends_at == add_years(FREE_END, 2)
    (purchase,) = renewed.purchases
    assert (purchase.years, purchase.activated_at, purchase.starts_at) == (2, clock.now(), FREE_END)
    assert await cloud.licences.run_due_reminders() == []
    await clock.advance(add_years(FREE_END, 2) - 30 * DAY - clock.now())
    assert [r.stage for r in await cloud.licences.run_due_reminders()] == ["30d"]


async def test_r14_renewing_a_lapsed_licence_starts_now(cloud: CloudServices, clock: VirtualClock) -> None:
    await owner(cloud, "gil@example.com", LEON)
    await clock.advance(FREE_END + 50 * DAY - clock.now())
    token = await _relogin(cloud, "gil@example.com")
    with pytest.raises(LicenseExpired):
        await cloud.commands.request(token, "r", LEON, "status.refresh")
    renewed = await cloud.licences.renew(token, LEON, 1)
    assert renewed.ends_at == add_years(clock.now(), 1)
    assert renewed.valid
    for bad in (0, 6, -1, True, "1"):
        with pytest.raises(InvalidRequest):
            await cloud.licences.renew(token, LEON, bad)  # type: ignore[arg-type]  # wrong types on purpose


async def test_r15_cancel_within_14_days_refunds_and_restores_the_end(
    cloud: CloudServices, clock: VirtualClock
) -> None:
    token = await owner(cloud, "hal@example.com", LEON)
    with pytest.raises(InvalidRequest):  # the free year is not a purchase
        await cloud.licences.cancel(token, LEON)
    await cloud.licences.renew(token, LEON, 1)
    await clock.advance(14 * DAY)
    cancelled = await cloud.licences.cancel(token, LEON)
    assert cancelled.ends_at == FREE_END
    (purchase,) = cancelled.purchases
    assert purchase.refunded_at == clock.now()
    assert cancelled.as_result()["purchases"][0]["refunded"] is True
    assert "Your CUPRA CONNECT purchase was cancelled" in [m.subject for m in await cloud.accounts.mailbox(token)]
    with pytest.raises(InvalidRequest):  # nothing left to cancel
        await cloud.licences.cancel(token, LEON)


async def test_r15_after_14_days_the_purchase_runs_to_its_end(cloud: CloudServices, clock: VirtualClock) -> None:
    token = await owner(cloud, "ida@example.com", LEON)
    await cloud.licences.renew(token, LEON, 1)
    await clock.advance(14 * DAY + 1)
    with pytest.raises(CancellationPeriodOver) as over:
        await cloud.licences.cancel(token, LEON)
    assert over.value.code.value == "CANCELLATION_PERIOD_OVER"
    assert (await cloud.licences.status(token, LEON)).ends_at == add_years(FREE_END, 1)


async def test_r10_only_the_primary_user_uses_the_store(cloud: CloudServices) -> None:
    primary = await owner(cloud, "jo@example.com", LEON)
    sec = await new_user(cloud, "kai@example.com")
    await cloud.garage.invite_secondary(primary, LEON, "kai@example.com")
    assert (await cloud.licences.status(sec, LEON)).valid  # a secondary user may look
    with pytest.raises(InsufficientRights):
        await cloud.licences.renew(sec, LEON, 1)
    await cloud.licences.renew(primary, LEON, 1)
    with pytest.raises(InsufficientRights):
        await cloud.licences.cancel(sec, LEON)


async def test_r16_the_licence_stays_with_the_car_after_a_sale(cloud: CloudServices, clock: VirtualClock) -> None:
    seller = await owner(cloud, "lou@example.com", LEON, BORN)
    await cloud.licences.renew(seller, LEON, 3)
    born_end = (await cloud.licences.status(seller, BORN)).ends_at
    assert born_end == FREE_END  # the purchase did not touch the seller's other car
    await cloud.garage.factory_reset(LEON)
    buyer = await new_user(cloud, "mo@example.com")
    await enrol(cloud, buyer, LEON)
    status = await cloud.licences.status(buyer, LEON)
    assert status.ends_at == add_years(FREE_END, 3)
    with pytest.raises(InvalidRequest):  # the seller's purchase is not the buyer's to cancel
        await cloud.licences.cancel(buyer, LEON)
    assert (await cloud.commands.request(buyer, "r", LEON, "unlock", spin=SPIN)).created
    # Reminders go to the car's current primary user.
    await clock.advance(add_years(FREE_END, 3) - 30 * DAY - clock.now())
    emails = {(r.vin, r.email) for r in await cloud.licences.run_due_reminders()}
    assert (LEON, "mo@example.com") in emails
