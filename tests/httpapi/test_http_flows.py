"""The HTTP app API against the real cloud and a real Mosquitto, with a real HTTP client: the whole path of a
new user, and what an MQTT app and an HTTP app of the same user share (session rules, S-PIN lockout,
idempotency)."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest
from conftest import SseReader, bearer

from tcu_sim.app import SpinIncorrect, SpinLocked
from tcu_sim.testing import SimCar, SimCloud, SimUser

pytestmark = pytest.mark.mosquitto

PASSWORD = "correct horse battery"
SPIN = "2580"


async def _sign_up(http: httpx.AsyncClient, email: str) -> str:
    assert (await http.post("/api/v1/register", json={"email": email, "password": PASSWORD, "spin": SPIN})).json() == {}
    login = await http.post("/api/v1/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200
    assert login.json()["verified"] is False
    token: str = login.json()["token"]
    mails = (await http.get("/api/v1/mailbox", headers=bearer(token))).json()["mails"]
    code = re.search(r"verify\?code=([A-Za-z0-9_-]+)", mails[-1]["body"])
    assert code is not None, [m["subject"] for m in mails]
    verified = await http.post("/api/v1/verify-email", json={"code": code.group(1)})
    assert verified.json() == {"verified": True}
    return token


async def test_register_verify_login_enrol_lock_and_status(
    http: httpx.AsyncClient, car: SimCar, cloud: SimCloud
) -> None:
    token = await _sign_up(http, "driver@example.com")
    async with SseReader(http, token) as events:
        added = await http.post("/api/v1/vehicles", json={"vin": car.vin, "accept_terms": True},
                                headers=bearer(token))
        assert added.status_code == 200, added.text
        assert added.json()["method"] == "tkov"
        car.control("tkov")  # both keys in the car (R5)
        await events.next(lambda e: e.event == "vehicle_changed" and e.data["data"].get("event") == "enrolled")

        garage = (await http.get("/api/v1/vehicles", headers=bearer(token))).json()["vehicles"]
        assert [(v["vin"], v["role"]) for v in garage] == [(car.vin, "primary")]

        sent = await http.post(f"/api/v1/vehicles/{car.vin}/commands", json={"op": "lock", "spin": SPIN},
                               headers=bearer(token) | {"Idempotency-Key": "lock-1"})
        assert sent.status_code == 202, sent.text
        command_id = sent.json()["command_id"]
        done = await events.next(lambda e: e.event == "command_progress" and e.data["data"]["state"] == "succeeded")
        assert done.data["data"]["command_id"] == command_id
        assert done.id is not None

    status = await http.get(f"/api/v1/commands/{command_id}", headers=bearer(token))
    assert status.json()["state"] == "succeeded"
    assert status.json()["history"][0]["state"] == "queued"

    async def locked() -> bool | None:
        reply = (await http.get(f"/api/v1/vehicles/{car.vin}/status", headers=bearer(token))).json()
        return True if reply["status"] is not None and reply["status"]["locked"] else None

    async def what() -> str:
        return "the car's status never said locked"

    assert await cloud.wait_until(locked, timeout=10, what=what)


async def test_events_resume_after_the_last_event_id(http: httpx.AsyncClient, car: SimCar) -> None:
    token = await _sign_up(http, "resume@example.com")
    async with SseReader(http, token) as events:
        await http.post("/api/v1/vehicles", json={"vin": car.vin, "accept_terms": True}, headers=bearer(token))
        car.control("tkov")
        first = await events.next(lambda e: e.event == "vehicle_changed")
    mail = await http.post("/api/v1/change-spin", json={"old_spin": SPIN, "new_spin": "1357"}, headers=bearer(token))
    assert mail.status_code == 200, mail.text
    assert first.id is not None
    async with SseReader(http, token, last_event_id=first.id) as resumed:
        later = await resumed.next(lambda e: e.event == "mail")
    assert int(later.id or 0) > int(first.id)


async def test_vehicle_not_found_is_the_same_bytes_for_a_stranger_s_car_and_an_unknown_vin(
    http: httpx.AsyncClient, car: SimCar, app_user: SimUser
) -> None:
    await app_user.enrol(car)  # somebody else's car
    token = await _sign_up(http, "stranger@example.com")
    theirs = await http.get(f"/api/v1/vehicles/{car.vin}/status", headers=bearer(token))
    unknown = await http.get("/api/v1/vehicles/VSSZZZ5FZR9999999/status", headers=bearer(token))
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.content == unknown.content
    assert theirs.headers["content-type"] == unknown.headers["content-type"] == "application/problem+json"
    assert theirs.json()["code"] == "VEHICLE_NOT_FOUND"


async def test_errors_are_problem_documents_and_hold_no_secret(http: httpx.AsyncClient) -> None:
    no_token = await http.get("/api/v1/vehicles")
    assert no_token.status_code == 401
    assert no_token.headers["www-authenticate"] == "Bearer"
    assert no_token.json()["code"] == "UNAUTHENTICATED"
    assert no_token.json()["type"] == "urn:tcu-sim:error:UNAUTHENTICATED"

    bad = await http.post("/api/v1/register", json={"email": "a@example.com", "password": "hunter2-secret",
                                                   "spin": 1234})
    assert bad.status_code == 400
    assert bad.json()["code"] == "INVALID_REQUEST"
    assert "spin" in bad.json()["detail"]
    assert "hunter2" not in bad.text

    trivial = await http.post("/api/v1/register", json={"email": "b@example.com", "password": "pw-long-enough-1",
                                                       "spin": "1234"})
    assert trivial.json()["code"] == "SPIN_POLICY"

    huge = await http.post("/api/v1/login", content=b"{" + b" " * 70_000 + b"}",
                           headers={"content-type": "application/json"})
    assert huge.status_code == 413


async def test_the_s_pin_lockout_is_shared_between_an_mqtt_app_and_an_http_app(
    http: httpx.AsyncClient, car: SimCar, app_user: SimUser
) -> None:
    await app_user.enrol(car)
    login = await http.post("/api/v1/login", json={"email": app_user.email, "password": app_user.password})
    token = login.json()["token"]
    lock = f"/api/v1/vehicles/{car.vin}/commands"

    with pytest.raises(SpinIncorrect) as first:
        await app_user.send(car, "lock", spin="9753")  # over MQTT
    assert first.value.remaining_tries == 2
    second = await http.post(lock, json={"op": "lock", "spin": "9753"}, headers=bearer(token))
    assert second.status_code == 403
    assert second.json()["code"] == "SPIN_INCORRECT"
    assert second.json()["remaining_tries"] == 1
    with pytest.raises((SpinIncorrect, SpinLocked)):
        await app_user.send(car, "lock", spin="9753")  # the third wrong one, over MQTT again
    locked = await http.post(lock, json={"op": "lock", "spin": app_user.spin}, headers=bearer(token))
    assert locked.status_code == 423
    assert locked.json()["code"] == "SPIN_LOCKED"
    assert locked.json()["locked_seconds"] > 0
    with pytest.raises(SpinLocked):
        await app_user.send(car, "lock")  # the right S-PIN, still locked for the MQTT app too


async def test_the_same_request_id_is_one_command_over_mqtt_and_http(
    http: httpx.AsyncClient, car: SimCar, app_user: SimUser
) -> None:
    await app_user.enrol(car)
    login = await http.post("/api/v1/login", json={"email": app_user.email, "password": app_user.password})
    token = login.json()["token"]
    key = uuid.uuid4().hex
    over_mqtt = await app_user.app.command(car.vin, "lock", spin=app_user.spin, request_id=key)
    headers = bearer(token) | {"Idempotency-Key": key}
    over_http = await http.post(f"/api/v1/vehicles/{car.vin}/commands", json={"op": "lock", "spin": app_user.spin},
                                headers=headers)
    again = await http.post(f"/api/v1/vehicles/{car.vin}/commands", json={"op": "lock", "spin": app_user.spin},
                            headers=headers)
    assert over_http.status_code == again.status_code == 202
    assert over_http.json()["command_id"] == again.json()["command_id"] == over_mqtt


async def test_logging_out_over_http_ends_the_session(http: httpx.AsyncClient, app_user: SimUser) -> None:
    login = await http.post("/api/v1/login", json={"email": app_user.email, "password": app_user.password})
    token = login.json()["token"]
    assert (await http.get("/api/v1/vehicles", headers=bearer(token))).status_code == 200
    assert (await http.post("/api/v1/logout", headers=bearer(token))).status_code == 200
    after = await http.get("/api/v1/vehicles", headers=bearer(token))
    assert after.status_code == 401
    assert after.json()["code"] == "UNAUTHENTICATED"
    assert (await http.get("/api/v1/events", headers=bearer(token))).status_code == 401

