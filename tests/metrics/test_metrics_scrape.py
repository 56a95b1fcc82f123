"""`/metrics` of a running sandbox (real Mosquitto, cloud and car), scraped over HTTP and parsed with
prometheus_client's own parser: the documented metrics move after a command and after a fault."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from tcu_sim.cli import cli
from tcu_sim.events import CarConnectFailed, CarConnection, CommandChanged, FaultChanged, Source
from tcu_sim.metrics import METRIC_NAMES, Metrics
from tcu_sim.testing import Sandbox, SimCar, SimCloud, SimFaults, SimFleet, SimUser

WAIT = 10.0
GRAFANA = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "tcu-sim.json"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(url: str) -> Samples:
    """GET /metrics with a real HTTP client, parsed by prometheus_client.parser."""

    def get() -> str:
        with urllib.request.urlopen(url, timeout=WAIT) as response:  # noqa: S310 - a http:// URL we built
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            return str(response.read().decode("utf-8"))

    text = await asyncio.to_thread(get)
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of `name` that has `labels`."""
    want = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and want <= have)


@pytest.fixture
async def metrics(tcu_sandbox: Sandbox, cloud: SimCloud, fleet: SimFleet) -> AsyncIterator[Metrics]:
    async with Metrics(tcu_sandbox.events, cloud=lambda: cloud.stats, fleet=lambda: fleet.runner.sessions) as m:
        yield m


async def test_metrics_move_after_a_command_and_a_fault(
    tcu_sandbox: Sandbox, metrics: Metrics, fleet: SimFleet, car: SimCar, app_user: SimUser, faults: SimFaults
) -> None:
    server = metrics.serve(0)
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/metrics", server.url)
    before = await scrape(server.url)
    assert value(before, "tcu_sim_commands_total", op="lock", state="succeeded") == 0
    assert value(before, "tcu_sim_event_stream_subscribers") >= 1  # the metrics' own subscription

    await app_user.enrol(car)
    async with tcu_sandbox.events.subscribe(CommandChanged, name="test") as steps:
        lock = await app_user.send(car, "lock")
        await steps.wait_for(lambda e: e.command_id == lock and e.state == "succeeded", timeout=WAIT)
    metrics.catch_up()
    after = await scrape(server.url)
    assert value(after, "tcu_sim_commands_total", op="lock", state="queued") == 1
    assert value(after, "tcu_sim_commands_total", op="lock", state="succeeded") == 1
    assert value(after, "tcu_sim_command_round_trip_seconds_count", op="lock", state="succeeded") == 1
    assert value(after, "tcu_sim_car_commands_total", outcome="succeeded", reason="none") >= 1
    assert value(after, "tcu_sim_cloud_messages_received_total", kind="results") >= 2
    assert value(after, "tcu_sim_cloud_messages_sent_total", kind="command") >= 1
    assert value(after, "tcu_sim_cloud_app_requests_total", op="command") >= 1
    cars = len(fleet.runner.sessions)
    assert value(after, "tcu_sim_fleet_cars") == cars
    assert value(after, "tcu_sim_cars_online", side="fleet") == cars
    published = "tcu_sim_fleet_messages_published_total"
    assert value(after, published) > value(before, published)

    async with tcu_sandbox.events.subscribe(FaultChanged, CarConnection, name="fault") as seen:
        assert await faults.inject(car, {"kind": "offline"})  # through the fault layer, which reports it
        fault = await seen.wait_for(lambda e: isinstance(e, FaultChanged) and e.active, timeout=WAIT)
        assert isinstance(fault, FaultChanged)
        await seen.wait_for(lambda e: isinstance(e, CarConnection) and not e.online, timeout=WAIT)
    metrics.catch_up()
    faulted = await scrape(server.url)
    assert value(faulted, "tcu_sim_faults_active", fault=fault.fault) == 1
    assert value(faulted, "tcu_sim_faults_total", fault=fault.fault) == 1
    assert value(faulted, "tcu_sim_cars_online", side="fleet") == cars - 1
    assert total(faulted, "tcu_sim_car_disconnects_total", side="fleet") >= 1

    # no per-VIN label anywhere: 10,000 cars give the series of one
    assert not any(car.vin in v for (_, labels) in faulted for _, v in labels)


async def test_failed_connects_are_counted_while_the_broker_is_down(
    tcu_sandbox: Sandbox, metrics: Metrics, fleet: SimFleet, car: SimCar, faults: SimFaults
) -> None:
    if not tcu_sandbox.broker.controllable:
        pytest.skip("the broker is not ours to stop (--tcu-broker URL)")
    server = metrics.serve(0)
    name = "tcu_sim_fleet_connect_failures_total"
    assert value(await scrape(server.url), name) == 0
    async with tcu_sandbox.events.subscribe(CarConnectFailed, CarConnection, name="test") as seen:
        await faults.broker_kill()
        failed = await seen.wait_for(lambda e: isinstance(e, CarConnectFailed) and e.vin == car.vin, timeout=WAIT)
        assert isinstance(failed, CarConnectFailed)
        assert failed.error
        await faults.broker_start()
        await seen.wait_for(
            lambda e: isinstance(e, CarConnection) and e.source is Source.FLEET and e.vin == car.vin and e.online,
            timeout=WAIT * 6,
        )
    assert value(await scrape(server.url), name) >= 1


async def test_a_refused_app_request_is_counted_by_op_and_code(
    tcu_sandbox: Sandbox, metrics: Metrics, car: SimCar, app_user: SimUser
) -> None:
    await app_user.enrol(car)
    with pytest.raises(Exception, match="SPIN_INCORRECT"):
        await app_user.send(car, "unlock", spin="0000")
    metrics.catch_up()
    samples = await scrape(metrics.serve(0).url)
    assert value(samples, "tcu_sim_app_refusals_total", op="command", code="SPIN_INCORRECT") == 1


def test_the_grafana_dashboard_names_only_exported_metrics() -> None:
    dashboard = json.loads(GRAFANA.read_text(encoding="utf-8"))
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert len(exprs) >= 8
    suffixes = ("_total", "_bucket", "_count", "_sum")
    for expr in exprs:
        names = re.findall(r"\btcu_sim_[a-z_]+", expr)
        assert names, f"a query without a tcu-sim metric: {expr}"
        for name in names:
            base = next((name.removesuffix(s) for s in suffixes if name.endswith(s)), name)
            assert base in METRIC_NAMES, f"{name} is not exported"


def test_the_readme_lists_every_metric_and_its_commands_exist() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"`(tcu_sim_[a-z_]+)`", readme))
    assert listed == set(METRIC_NAMES)
    runner = CliRunner()
    for command in (["up"], ["cloud", "run"], ["fleet", "run"]):
        assert "--metrics PORT" in runner.invoke(cli, [*command, "--help"]).output
    assert "--report-html" in runner.invoke(cli, ["scenario", "run", "--help"]).output
