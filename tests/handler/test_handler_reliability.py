"""The cloud keeps working across a broker restart, splits the work with another cloud process over MQTT 5 shared
subscriptions, and runs the licence reminders (R14) on the virtual clock."""

from __future__ import annotations

import contextlib

import pytest
from handler_kit import DAY, LEON, PASSWORD, START, WAIT, Stack, cloud_stack, enrol_tkov, sign_up, status

from broker.handler import HandlerConfig
from tcu_sim.testing import MosquittoBroker


async def test_reconnects_after_a_broker_restart(stack: Stack) -> None:
    async with stack.car(LEON) as car:
        await car.send_status(status(at=stack.clock.now()))
        await stack.wait(lambda s: s.applied["status"] == 1)
        sent = car.seq
    await stack.broker.restart()
    await stack.handler.link.wait_connects(2, timeout=WAIT)
    assert stack.stats.disconnects == 1
    async with stack.app() as app, stack.car(LEON, first_seq=sent + 1) as car:
        await sign_up(app, "after-restart@example.com")  # requests are answered again
        await car.send_status(status(at=stack.clock.now() + 1))
        await stack.wait(lambda s: s.applied["status"] == 2)


async def test_two_cloud_processes_share_the_work(mosquitto: MosquittoBroker, registry_url: str) -> None:
    def config(client_id: str) -> HandlerConfig:
        return HandlerConfig(client_id=client_id, shared_subscriptions=True, session_expiry_s=0)

    async with contextlib.AsyncExitStack() as exit_stack:
        one = await exit_stack.enter_async_context(cloud_stack(mosquitto, registry_url, config=config("cloud")))
        two = await exit_stack.enter_async_context(cloud_stack(mosquitto, registry_url, config=config("cloud-2")))
        async with one.app() as app:
            await sign_up(app, "shared@example.com")
            for _ in range(8):
                await app.list_vehicles()
        answered = [sum(s.stats.requests.values()) for s in (one, two)]
        # Each request was answered by exactly one of them, and both took a share.
        assert sum(answered) == 12
        assert min(answered) > 0
        assert one.stats.errors == two.stats.errors == {}


async def test_licence_reminders_run_on_the_virtual_clock(mosquitto: MosquittoBroker, registry_url: str) -> None:
    config = HandlerConfig(session_expiry_s=0, reminder_interval_s=DAY)
    async with cloud_stack(mosquitto, registry_url, config=config) as stack, stack.app() as app:
        async with stack.car(LEON) as car:
            await sign_up(app, "reminded@example.com")
            await enrol_tkov(stack, app, car, "reminded@example.com")
            await car.next_command(0)  # the primary-user confirmation
            licence = await app.licence_status(LEON)
            ends_at = licence["ends_at"]
            assert ends_at == pytest.approx(START - 100 * DAY + 365 * DAY)
            # Jump to 30 days before the end; the next daily run sends the first reminder (mail and car).
            stack.clock.set_time(ends_at - 30 * DAY + 60)
            await stack.advance_until(lambda: len(car.commands()) >= 2, step=DAY, limit=3 * DAY)
            _, notice = await car.next_command(1)
        assert notice.body["op"] == "infotainment.notify"
        assert "30 days" in notice.body["params"]["message"]
        await app.login("reminded@example.com", PASSWORD)  # 8 months later the session is too old
        subjects = [m.subject for m in await app.mailbox()]
        assert subjects.count("Your CUPRA CONNECT services end soon") == 1
