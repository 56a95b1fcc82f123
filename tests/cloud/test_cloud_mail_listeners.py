"""Mail listeners (what the handler's `mail` pushes hang on): told of every mail the simulated mailbox receives —
account mails and licence reminders alike — after it is stored; a failing listener never fails the service."""

from __future__ import annotations

from cloud_testkit import DAY, LEON, START, owner

from broker.cloud import CloudServices, add_years
from broker.registry import MailRecord
from tcu_sim.clock import VirtualClock


async def test_listeners_hear_of_every_mail_stored(cloud: CloudServices, clock: VirtualClock) -> None:
    heard: list[MailRecord] = []

    async def listener(mail: MailRecord) -> None:
        heard.append(mail)

    cloud.ctx.mail_listeners.append(listener)
    await owner(cloud, "heard@example.com", LEON)  # verification link, then the car in the garage
    assert [m.subject for m in heard] == [m.subject for m in await cloud.accounts.mailbox_for("heard@example.com")]
    assert all(m.id is not None and m.user_id is not None for m in heard)
    # Reminders are stored by the registry together with their record, not through `ctx.mail`: heard too.
    await clock.advance(add_years(START - 100 * DAY, 1) - 30 * DAY - clock.now())
    assert len(await cloud.licences.run_due_reminders()) == 1
    assert heard[-1].subject == "Your CUPRA CONNECT services end soon"


async def test_a_failing_listener_does_not_fail_the_service(cloud: CloudServices) -> None:
    async def broken(mail: MailRecord) -> None:
        raise RuntimeError("push failed")

    cloud.ctx.mail_listeners.append(broken)
    await owner(cloud, "still@example.com", LEON)
    assert len(await cloud.accounts.mailbox_for("still@example.com")) >= 2
