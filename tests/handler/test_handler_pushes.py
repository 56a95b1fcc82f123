"""Push events reach the app from whichever cloud process applies the news — also one started after a restart,
which never saw the app log in or ask for the command (the clients are kept in the registry) — and the app hears of
every mail its user gets (subject, never the body)."""

from __future__ import annotations

import contextlib

from handler_kit import LEON, PASSWORD, SPIN, Stack, cloud_stack, enrol_tkov, next_push, sign_up

from tcu_sim.protocol import ResultState
from tcu_sim.testing import MosquittoBroker


async def test_pushes_survive_a_cloud_restart(mosquitto: MosquittoBroker, registry_url: str) -> None:
    email = "restart@example.com"
    async with contextlib.AsyncExitStack() as outer:
        async with cloud_stack(mosquitto, registry_url) as first:
            app = await outer.enter_async_context(first.app())
            async with first.car(LEON) as car:
                await sign_up(app, email)
                await enrol_tkov(first, app, car, email)
                await car.next_command(0)  # the primary-user confirmation
                command_id = await app.lock(LEON, SPIN)
                await car.next_command(1)
                await next_push(app, "command_progress", lambda d: d["state"] == "delivered")
                last_seq = car.seq
        # A new cloud process on the same registry: it has never seen this app.
        async with cloud_stack(mosquitto, registry_url) as second, second.car(LEON, first_seq=last_seq + 1) as car:
            await car.send_result(command_id, ResultState.ACCEPTED)
            await car.send_result(command_id, ResultState.SUCCEEDED)
            progress = await next_push(app, "command_progress", lambda d: d["state"] == "succeeded")
            await car.send_event({"type": "door_opened", "at": second.clock.now(), "door": "trunk"})
            changed = await next_push(app, "vehicle_changed", lambda d: d.get("event") == "door_opened")
            assert second.stats.pushes >= 2
    assert progress["command_id"] == command_id
    assert changed == {"vin": LEON, "event": "door_opened", "at": changed["at"], "door": "trunk"}


async def test_the_app_is_told_of_each_mail_by_subject_only(stack: Stack) -> None:
    async with stack.app() as app, stack.app("app-2") as other:
        await sign_up(other, "other@example.com")
        await sign_up(app, "mail@example.com")
        await app.change_password(PASSWORD, PASSWORD + "!")
        pushed = await next_push(app, "mail", lambda d: "password" in d["subject"])
        # A reply to the other app comes after anything pushed to it before: it was told nothing.
        await other.list_vehicles()
        assert [e.type for e in other.pending_events()] == []
    newest = (await stack.services.registry.list_mail("mail@example.com"))[-1]
    assert pushed == {"subject": newest.subject, "at": newest.at, "mail_id": newest.id}
    assert newest.body not in str(pushed)
