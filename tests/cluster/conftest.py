"""Fixtures of the cluster suite (`-m cluster`): a real 3-node NATS cluster (MQTT gateway + JetStream) on free
loopback ports, a provisioned fleet whose certificates it knows, and the cloud on one of its nodes.

A missing nats-server skips these tests with a loud reason, and fails them under CI=true (like Mosquitto).
"""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from broker.cloud import PasswordHasher, ServerSecret, load_manifest
from broker.handler import CloudHandler, HandlerConfig
from broker.mosquitto import AclPolicy, Grant, GrantAccess
from broker.nats import NatsCluster, find_nats_server
from broker.pki import FleetPKI
from broker.runtime import BrokerLogin, CloudKeys, CloudSite, open_cloud
from tcu_sim.clock import SystemClock
from tcu_sim.events import EventStream
from tcu_sim.fleet import CarSpec, StateDir, expand_fleet, parse_fleet, provision

APP = "app-one"  # an app with a certificate: NATS has one MQTT listener, with mutual TLS (docs/scale-out.md)
AUDITOR = "auditor"  # test-only: reads everything, to see that a denied message reached nobody

FLEET = """
name: cluster-test
seed: 17
defaults:
  home_area: {center: {lat: 41.39, lon: 2.17}, radius_km: 1}
  status_interval_s: 600
groups:
  - {name: leon, count: 6, model: leon, equipment: media_system}
"""


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


@pytest.fixture
def nats_server() -> Path:
    """The nats-server binary; otherwise skip loudly (fail under CI=true)."""
    binary = find_nats_server()
    if binary is not None:
        return binary
    reason = (
        "NATS-SERVER NOT FOUND - the cluster suite needs a real NATS cluster: install it "
        "(apt-get install nats-server) or set TCU_SIM_NATS_SERVER=/path/to/nats-server. "
        "Under CI=true this is a failure, not a skip."
    )
    if _in_ci():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def app_policy(name: str = APP) -> AclPolicy:
    """The Mosquitto rules, plus an app identity with the app listener's grants (`%u` = its name) and the
    auditor (one more user; it changes nothing of the rules under test)."""
    app_grants = tuple(Grant(g.access, g.topic.replace("%u", name)) for g in AclPolicy().app_grants)
    return AclPolicy(named={name: app_grants, AUDITOR: (Grant(GrantAccess.READ, "#"),)})


@dataclass
class ClusterFleet:
    """A provisioned fleet and the cluster that knows its certificates."""

    state: StateDir
    cars: list[CarSpec]
    cluster: NatsCluster

    @property
    def vins(self) -> list[str]:
        return [car.vin for car in self.cars]


@pytest.fixture
async def cluster_fleet(tmp_path: Path, nats_server: Path) -> AsyncIterator[ClusterFleet]:
    """Six provisioned cars and a running 3-node cluster."""
    config = parse_fleet(FLEET, source="<cluster-test>")
    state = StateDir(tmp_path / "state")
    provision(config, state, clock=SystemClock())
    cars = expand_fleet(config)
    pki = FleetPKI(state.pki_dir)
    pki.ensure_identity(APP)
    pki.ensure_identity(AUDITOR)
    cluster = NatsCluster(tmp_path / "nats", pki, [car.vin for car in cars], policy=app_policy(), binary=nats_server)
    async with cluster:
        yield ClusterFleet(state, cars, cluster)


@asynccontextmanager
async def cloud_on(
    fleet: ClusterFleet, node: int, events: EventStream, registry_url: str, *, client_id: str = "cloud"
) -> AsyncIterator[CloudHandler]:
    """The cloud (`broker.runtime.open_cloud`) connected to node `node`: MQTT 3.1.1, no shared subscriptions."""
    state, cluster = fleet.state, fleet.cluster
    site = CloudSite(
        registry_url=registry_url,
        broker=BrokerLogin(cluster.host, cluster.mqtt_ports[node], tls_context=cluster.ssl_context(client_id)),
        handler=HandlerConfig(client_id=client_id, protocol="3.1.1", car_workers=2, app_workers=2),
    )
    keys = CloudKeys(state.load_cloud_signing_key(), state.load_fleet_keys(), ServerSecret(random.randbytes(32)))
    async with open_cloud(
        site,
        clock=SystemClock(),
        keys=keys,
        vehicles=load_manifest(state.manifest_path),
        events=events,
        passwords=PasswordHasher.for_tests(),
    ) as handler:
        await handler.wait_ready(20)
        yield handler
