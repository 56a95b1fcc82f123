"""The web dashboard in headless Chromium (Debian's `chromium`, driven by Playwright; never `playwright
install`): the demo's 20 cars on the map and in the table, a click on "offline" turns a car offline in the page,
and a lock sent through the HTTP app API shows up in the command trace. Skipped locally with a loud reason when
Chromium or Mosquitto is missing; under CI=true it fails instead.

With TCU_SIM_UPDATE_SCREENSHOT=1 the test also writes docs/dashboard.png (the README's picture)."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from broker.cloud import PasswordHasher
from broker.http import HttpApi, serve_http
from tcu_sim.fleet import UserRole, load_fleet
from tcu_sim.stack import LocalStack, StackConfig
from tcu_sim.testing.plugin import require_mosquitto
from tcu_sim.web import Dashboard

pytestmark = pytest.mark.mosquitto

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
WAIT_MS = 10_000
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _require_chromium() -> None:
    if CHROMIUM.is_file():
        return
    reason = f"{CHROMIUM} not found: apt-get install chromium (the dashboard's browser test needs it)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
async def dashboard_url(tmp_path: Path) -> AsyncIterator[tuple[str, LocalStack]]:
    require_mosquitto()
    _require_chromium()
    fleet = load_fleet(REPO / "fleet_configs" / "demo.yaml")
    config = StackConfig(state_dir=tmp_path / "state", port=0)
    async with LocalStack(fleet, config, passwords=PasswordHasher.for_tests()) as stack:
        api = HttpApi(stack.cloud)
        try:
            async with serve_http(Dashboard(stack, api).app, "127.0.0.1", 0) as server:
                yield server.url, stack
        finally:
            api.close()


async def test_the_dashboard_shows_the_fleet_live_and_its_controls_work(
    dashboard_url: tuple[str, LocalStack], tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    url, stack = dashboard_url
    user = next(u for u in stack.fleet_config.users if u.role is UserRole.PRIMARY)
    own = [c.vin for c in stack.users if c.email == user.email]
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True, args=ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            page = await browser.new_page()
            await page.goto(f"{url}/?tiles=off")
            await page.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)
            assert await page.locator("#cars tbody tr").count() == 20
            assert await page.get_attribute("#map", "data-markers") == "20"
            assert await page.text_content("#map-note") == "20 cars on the map"

            # A click on "offline" for one car (not the one locked below): the page shows it offline.
            target = next(s.vin for s in stack.cars if s.vin not in own)
            row = page.locator(f'#cars tbody tr[data-vin="{target}"]')
            await row.get_by_role("button", name="offline").click()
            await page.wait_for_selector(f'#cars tbody tr[data-vin="{target}"].offline', timeout=WAIT_MS)

            # A lock through the HTTP app API appears in the command trace.
            async with httpx.AsyncClient(base_url=url, timeout=10) as http:
                login = await http.post("/api/v1/login", json={"email": user.email,
                                                               "password": user.password.get_secret_value()})
                token = login.json()["token"]
                sent = await http.post(f"/api/v1/vehicles/{own[0]}/commands",
                                       json={"op": "lock", "spin": user.spin.get_secret_value()},
                                       headers={"Authorization": f"Bearer {token}"})
                assert sent.status_code == 202, sent.text
            await page.wait_for_selector(f'#trace li:has-text("lock {own[0]}: succeeded")', timeout=WAIT_MS)

            shot = tmp_path / "dashboard.png"
            await page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            if os.environ.get("TCU_SIM_UPDATE_SCREENSHOT") == "1":
                shutil.copyfile(shot, REPO / "docs" / "dashboard.png")
        finally:
            await browser.close()


async def test_the_dashboard_refuses_cross_site_and_foreign_hosts(dashboard_url: tuple[str, LocalStack]) -> None:
    url, stack = dashboard_url
    vin = stack.cars[0].vin
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        cross = await http.post(f"/dashboard/api/cars/{vin}/offline", json={"seconds": 5},
                                headers={"Origin": "http://evil.example"})
        assert cross.status_code == 403
        rebound = await http.get("/dashboard/api/cars", headers={"Host": "evil.example"})
        assert rebound.status_code == 421
        form = await http.post(f"/dashboard/api/cars/{vin}/offline", content=b"seconds=5",
                               headers={"content-type": "application/x-www-form-urlencoded"})
        assert form.status_code == 415
        unknown = await http.post("/dashboard/api/cars/NOT-A-CAR/offline", json={"seconds": 5})
        assert unknown.status_code == 404
    assert stack.fleet.sessions[vin].online


async def test_an_operator_token_guards_every_dashboard_request(dashboard_url: tuple[str, LocalStack]) -> None:
    _, stack = dashboard_url
    vin = stack.cars[0].vin
    api = HttpApi(stack.cloud)
    try:
        guarded = Dashboard(stack, api, operator_token="op-token-for-the-test")
        async with serve_http(guarded.app, "127.0.0.1", 0) as server, httpx.AsyncClient(base_url=server.url) as http:
            assert (await http.get("/dashboard/api/cars")).status_code == 401
            wrong = await http.post("/dashboard/api/session", json={"token": "guess"})
            assert wrong.status_code == 401
            assert (await http.get("/dashboard/api/cars", headers={"X-Operator-Token": "guess"})).status_code == 401
            with_header = await http.get("/dashboard/api/cars", headers={"X-Operator-Token": "op-token-for-the-test"})
            assert with_header.status_code == 200
            assert with_header.json()["total"] == 20
            session = await http.post("/dashboard/api/session", json={"token": "op-token-for-the-test"})
            assert session.status_code == 200
            assert "httponly" in session.headers["set-cookie"].lower()
            door = await http.post(f"/dashboard/api/cars/{vin}/door", json={"door": "front_left", "open": True})
            assert door.status_code == 200, door.text  # the cookie the session set
            assert "op-token-for-the-test" not in repr(guarded)
            assert (await http.get("/api/v1/vehicles")).json()["code"] == "UNAUTHENTICATED"  # the app API's own
    finally:
        api.close()
    car = stack.fleet.sessions[vin]
    snapshot = car.vehicle.snapshot(stack.clock.now(), online=car.online, signal_pct=car.signal_pct)
    assert snapshot.doors.front_left.open
