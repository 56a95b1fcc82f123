"""The cloud in the stack's process, built by `broker.runtime.open_cloud` as `tcu-sim cloud run` builds it: the
registry (SQLite in the state directory by default), the domain services with the state's server secret, the
manifest's cars imported (factory data, each car's free licence year), and the handler signing with the state's
cloud key."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator

from broker.cloud import CloudConfig, ManifestError, PasswordHasher, ServerSecret, load_manifest
from broker.handler import CloudHandler, HandlerConfig
from broker.registry import RegistryError
from broker.runtime import BrokerLogin, CloudKeys, CloudSite, open_cloud
from tcu_sim.clock import Clock
from tcu_sim.events import EventStream
from tcu_sim.fleet import StateDir, StateDirError
from tcu_sim.stack._errors import StackError
from tcu_sim.stack._files import load_server_secret

__all__ = ["stack_cloud"]


@contextlib.asynccontextmanager
async def stack_cloud(
    state: StateDir,
    clock: Clock,
    *,
    registry_url: str,
    host: str,
    port: int,
    tls_context: ssl.SSLContext | None,
    mqtt5: bool,
    topic_prefix: str,
    cloud: CloudConfig,
    events: EventStream,
    passwords: PasswordHasher | None = None,
) -> AsyncIterator[CloudHandler]:
    """The cloud handler of the state directory, connecting to the broker at `host:port` (not yet waited for),
    publishing into `events`, until exit."""
    try:
        keys = CloudKeys(
            state.load_cloud_signing_key(),
            state.load_fleet_keys(),
            ServerSecret(load_server_secret(state.cloud_dir / "server.secret")),
        )
        vehicles = load_manifest(state.manifest_path)
    except (StateDirError, ManifestError) as exc:
        raise StackError(str(exc)) from None
    site = CloudSite(
        registry_url=registry_url,
        broker=BrokerLogin(host, port, tls_context=tls_context),
        handler=HandlerConfig(topic_prefix=topic_prefix, protocol="5" if mqtt5 else "3.1.1"),
        cloud=cloud,
    )
    try:
        async with open_cloud(site, clock=clock, keys=keys, vehicles=vehicles, events=events, passwords=passwords) as c:
            yield c
    except RegistryError as exc:
        raise StackError(f"{registry_url.split('@')[-1]}: {exc}") from None
