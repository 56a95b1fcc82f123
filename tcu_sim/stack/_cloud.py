"""The cloud in the stack's process, built as `tcu-sim cloud run` builds it: the registry (SQLite in the state
directory by default), the domain services with the state's server secret, the manifest's cars imported (factory
data, each car's free licence year), and the handler signing with the state's cloud key."""

from __future__ import annotations

import contextlib
import random
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time
from pathlib import Path

from broker.cloud import CloudConfig, CloudServices, PasswordHasher, ServerSecret
from broker.handler import CloudHandler, HandlerConfig
from broker.registry import RegistryError, VehicleRecord, open_registry
from tcu_sim.clock import Clock
from tcu_sim.fleet import Manifest, StateDir, StateDirError
from tcu_sim.stack._errors import StackError
from tcu_sim.stack._files import load_server_secret

__all__ = ["open_cloud", "vehicle_records"]


def vehicle_records(manifest: Manifest) -> list[VehicleRecord]:
    """The registry's vehicle records for the manifest's cars (the free licence year starts at midnight UTC of
    the registration day, as `tcu-sim cloud run` imports them)."""
    return [
        VehicleRecord(
            vin=v.vin,
            model=v.model.value,
            equipment=v.equipment.value,
            registered_at=datetime.combine(v.registered_at, time(0, 0), tzinfo=UTC).timestamp(),
            group=v.group,
        )
        for v in manifest.vehicles
    ]


@contextlib.asynccontextmanager
async def open_cloud(
    state: StateDir,
    clock: Clock,
    *,
    registry_url: str,
    host: str,
    port: int,
    tls_context: ssl.SSLContext | None,
    mqtt5: bool,
    topic_prefix: str,
    command_ttl_s: float,
    passwords: PasswordHasher | None = None,
    rng: random.Random | None = None,
) -> AsyncIterator[CloudHandler]:
    """The cloud handler, connecting to the broker at `host:port` (not yet waited for), until exit."""
    try:
        cloud_key = state.load_cloud_signing_key()
        fleet_keys = state.load_fleet_keys()
        records = vehicle_records(state.load_manifest())
    except StateDirError as exc:
        raise StackError(str(exc)) from None
    secret = ServerSecret(load_server_secret(state.cloud_dir / "server.secret"))
    if registry_url.startswith("sqlite://"):
        Path(registry_url.removeprefix("sqlite://")).parent.mkdir(parents=True, exist_ok=True)
    config = HandlerConfig(topic_prefix=topic_prefix, protocol="5" if mqtt5 else "3.1.1")
    try:
        async with open_registry(registry_url) as registry:
            services = CloudServices(
                registry, clock, secret, config=CloudConfig(command_ttl_s=command_ttl_s), passwords=passwords,
                rng=rng,
            )
            await services.vehicles.import_vehicles(records)
            handler = CloudHandler(
                config, services, clock, host=host, port=port, cloud_key=cloud_key, fleet_keys=fleet_keys,
                tls_context=tls_context,
            )
            async with handler:
                yield handler
    except RegistryError as exc:
        raise StackError(f"{registry_url.split('@')[-1]}: {exc}") from None
