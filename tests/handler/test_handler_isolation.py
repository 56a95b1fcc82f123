"""A user cannot learn or touch another user's car: every answer about it is the same VEHICLE_NOT_FOUND as for
a VIN that does not exist — byte for byte apart from the request id — and the user comes from the session token,
never from the topic."""

from __future__ import annotations

import json

from handler_kit import LEON, SPIN, UNKNOWN_VIN, WAIT, Stack, enrol_tkov, nth_message, sign_up

from tcu_sim.protocol import encode_json
from tcu_sim.testing import Inbox


async def _raw_replies(stack: Stack, username: str, requests: list[dict[str, object]]) -> list[bytes]:
    """Send each request as raw JSON from `username`'s app client; the raw response payloads, in order."""
    topics = stack.topics
    out: list[bytes] = []
    async with stack.broker.app_client(username) as client:
        await client.subscribe(topics.app_responses(username), qos=1)
        async with Inbox(client, name=username) as inbox:
            for i, request in enumerate(requests):
                await client.publish(topics.app_requests(username), encode_json(request), qos=1)
                message = await nth_message(inbox, topics.app_responses(username), i, WAIT)
                out.append(message.payload if isinstance(message.payload, bytes) else b"")
    return out


async def test_another_users_car_is_indistinguishable_from_an_unknown_vin(stack: Stack) -> None:
    async with stack.app("app-1") as owner, stack.car(LEON) as car:
        await sign_up(owner, "owner@example.com")
        await enrol_tkov(stack, owner, car, "owner@example.com")
    async with stack.app("app-2") as intruder:
        await sign_up(intruder, "intruder@example.com")
        token = intruder.token
    intruder_user = await stack.services.registry.get_user_by_email("intruder@example.com")
    assert intruder_user is not None

    def pair(op: str, params: dict[str, object]) -> list[dict[str, object]]:
        return [
            {"id": "r-same", "op": op, "token": token, "params": {**params, "vin": vin}}
            for vin in (LEON, UNKNOWN_VIN)
        ]

    requests = (
        pair("vehicle_status", {})
        + pair("command", {"op": "unlock", "params": {}, "spin": "9371"})  # a wrong S-PIN, too
        + pair("command", {"op": "unlock", "params": {}, "spin": SPIN})
        + pair("licence_status", {})
        + pair("remove_vehicle", {})
        + pair("invite_secondary", {"email": "friend@example.com"})
    )
    replies = await _raw_replies(stack, "app-2", requests)
    for i in range(0, len(replies), 2):
        theirs, unknown = replies[i], replies[i + 1]
        assert theirs == unknown, requests[i]["op"]
        assert json.loads(theirs)["error"]["code"] == "VEHICLE_NOT_FOUND"
    # The wrong S-PIN against somebody else's car did not even count as a try.
    spin_state = await stack.services.registry.get_spin_state(intruder_user.id)
    assert spin_state.failures == 0
    # And nothing was sent to the car but the owner's confirmation.
    assert stack.stats.commands_sent == 1


async def test_the_user_comes_from_the_token_not_the_topic(stack: Stack) -> None:
    async with stack.app("app-1") as owner, stack.car(LEON) as car:
        await sign_up(owner, "owner@example.com")
        await enrol_tkov(stack, owner, car, "owner@example.com")
    # app-2 without the owner's token asks about the owner's car from its own client id: no access.
    async with stack.app("app-2") as other:
        await sign_up(other, "other@example.com")
        replies = await _raw_replies(
            stack, "app-2", [{"id": "r-1", "op": "vehicle_status", "token": other.token, "params": {"vin": LEON}}]
        )
    assert json.loads(replies[0])["error"]["code"] == "VEHICLE_NOT_FOUND"


async def test_unreadable_request_with_an_id_gets_invalid_request(stack: Stack) -> None:
    replies = await _raw_replies(
        stack, "app-3", [{"id": "r-bad", "op": "login", "params": "not an object"}]
    )
    reply = json.loads(replies[0])
    assert reply["id"] == "r-bad"
    assert reply["ok"] is False
    assert reply["error"]["code"] == "INVALID_REQUEST"
