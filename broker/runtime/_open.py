"""The cloud put together — registry → domain services → MQTT handler — in one place.

Every way the cloud runs (`tcu-sim cloud run`, `tcu-sim up`, the test harness's `SimCloud`, the scenario
runner, the benchmark) builds it here; what differs between them (a virtual clock, a throw-away secret, cheap
password hashing, one car worker, the event stream to publish into) is a parameter, not a copy.

    async with open_cloud(CloudSite(registry_url=url, broker=BrokerLogin(host, port, tls_context=ctx)),
                          clock=clock, keys=CloudKeys(cloud_key, fleet_keys, secret), vehicles=records) as cloud:
        await cloud.wait_ready(10)

`open_services` and `cloud_handler` are its two halves, for a caller that works on the services before the
handler starts (the scenario runner seeds users) or runs several handlers over one registry (the benchmark).
"""

from __future__ import annotations

import contextlib
import random
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from broker.cloud import CloudConfig, CloudServices, PasswordHasher, ServerSecret
from broker.handler import CloudHandler, HandlerConfig
from broker.registry import VehicleRecord, open_registry
from tcu_sim.clock import Clock
from tcu_sim.events import EventStream
from tcu_sim.protocol import KeySet, SigningKey

__all__ = ["BrokerLogin", "CloudKeys", "CloudSite", "cloud_handler", "open_cloud", "open_services"]


@dataclass(frozen=True, slots=True)
class BrokerLogin:
    """Where and as whom the cloud connects to the broker."""

    host: str
    port: int
    tls_context: ssl.SSLContext | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class CloudKeys:
    """The cloud's secrets and trust: its signing key, the fleet's public keys, the server secret (S-PIN and
    pairing-code HMAC key)."""

    cloud_key: SigningKey = field(repr=False)
    fleet_keys: KeySet
    secret: ServerSecret = field(repr=False)


@dataclass(frozen=True, slots=True)
class CloudSite:
    """What one cloud instance runs on: its registry and broker, and its configuration."""

    registry_url: str
    broker: BrokerLogin
    handler: HandlerConfig = field(default_factory=HandlerConfig)
    cloud: CloudConfig | None = None
    pool_size: int = 10


@contextlib.asynccontextmanager
async def open_services(
    registry_url: str,
    *,
    clock: Clock,
    secret: ServerSecret,
    config: CloudConfig | None = None,
    vehicles: Sequence[VehicleRecord] = (),
    passwords: PasswordHasher | None = None,
    rng: random.Random | None = None,
    pool_size: int = 10,
) -> AsyncIterator[CloudServices]:
    """The registry at `registry_url` (a SQLite file's folder is made) and the domain services on it, with
    `vehicles` imported (factory data and each car's free licence year), until exit. `RegistryError` when the
    store cannot be opened."""
    if registry_url.startswith("sqlite://"):
        Path(registry_url.removeprefix("sqlite://")).parent.mkdir(parents=True, exist_ok=True)
    async with open_registry(registry_url, pool_size=pool_size) as registry:
        services = CloudServices(registry, clock, secret, config=config, passwords=passwords, rng=rng)
        if vehicles:
            await services.vehicles.import_vehicles(vehicles)
        yield services


def cloud_handler(
    services: CloudServices,
    config: HandlerConfig,
    broker: BrokerLogin,
    *,
    keys: CloudKeys,
    events: EventStream | None = None,
    rng: random.Random | None = None,
) -> CloudHandler:
    """The cloud's MQTT handler on `services` (not started: enter it)."""
    return CloudHandler(
        config,
        services,
        services.ctx.clock,
        host=broker.host,
        port=broker.port,
        cloud_key=keys.cloud_key,
        fleet_keys=keys.fleet_keys,
        tls_context=broker.tls_context,
        username=broker.username,
        password=broker.password,
        rng=rng,
        events=events,
    )


@contextlib.asynccontextmanager
async def open_cloud(
    site: CloudSite,
    *,
    clock: Clock,
    keys: CloudKeys,
    vehicles: Sequence[VehicleRecord] = (),
    events: EventStream | None = None,
    passwords: PasswordHasher | None = None,
    rng: random.Random | None = None,
) -> AsyncIterator[CloudHandler]:
    """The whole cloud — registry, services, handler — running until exit (the handler is connecting; await
    `wait_ready` for it). The handler's `services`, `registry` and `events` are its parts."""
    async with open_services(
        site.registry_url,
        clock=clock,
        secret=keys.secret,
        config=site.cloud,
        vehicles=vehicles,
        passwords=passwords,
        rng=None if rng is None else random.Random(rng.getrandbits(64)),
        pool_size=site.pool_size,
    ) as services:
        handler = cloud_handler(services, site.handler, site.broker, keys=keys, events=events, rng=rng)
        async with handler:
            yield handler
