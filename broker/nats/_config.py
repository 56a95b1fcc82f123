"""The configuration of an N-node NATS cluster with its MQTT gateway and JetStream, for a tcu-sim fleet (SPEC §9).

Every node gets one file (`node-<i>.conf`): a cluster block routing to every other node, JetStream (which holds
the MQTT sessions, retained messages and QoS 1 messages, replicated on up to 3 nodes), and the MQTT listener with
mutual TLS, `verify_and_map`: the certificate's subject (`CN=<VIN>,O=<organization>`) *is* the NATS user, so the
identities are the fleet PKI's, as on Mosquitto.

Permissions are the `AclPolicy` of the Mosquitto configuration translated to NATS subjects: an MQTT topic
`tcu/<VIN>/status` is the subject `tcu.<VIN>.status`, `+` is `*` and `#` is `>`. NATS has no `%u` pattern in a
static configuration, so each car gets its own user entry with its own subjects (one ~400-byte entry a car).
Every MQTT user may subscribe to `$MQTT.sub.>`, the inboxes through which JetStream delivers QoS 1 messages
(an MQTT client cannot subscribe to `$MQTT/...` topics itself; the node refuses them); and every user may connect
through MQTT only (`allowed_connection_types`), so nobody reaches those inboxes over the NATS protocol.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from broker.mosquitto import AclPolicy, Grant
from broker.pki import FleetPKI

__all__ = [
    "NatsClusterConfig",
    "NatsNode",
    "mqtt_subject",
    "render_node_config",
    "write_cluster_config",
]

#: JetStream delivers QoS 1 messages of an MQTT subscription on `$MQTT.sub.<id>`: every MQTT user needs it.
QOS1_INBOX = "$MQTT.sub.>"


@dataclass(frozen=True, slots=True)
class NatsNode:
    """One node's name and ports: `client` (NATS protocol, used by nobody of tcu-sim), `cluster` (routes),
    `mqtt` (the devices' mutual-TLS listener) and `http` (monitoring: /healthz tells readiness)."""

    name: str
    client: int
    cluster: int
    mqtt: int
    http: int


@dataclass(frozen=True)
class NatsClusterConfig:
    """What every node of the cluster shares, and its nodes.

    `users` maps a NATS user (the certificate subject, RFC 2253) to its (publish, subscribe) subjects.
    """

    nodes: tuple[NatsNode, ...]
    host: str
    ca_file: Path
    cert_file: Path
    key_file: Path
    users: dict[str, tuple[tuple[str, ...], tuple[str, ...]]]
    cluster_name: str = "tcu-sim"
    stream_replicas: int = 3
    max_file_store: str = "4G"
    max_memory_store: str = "256M"

    def __post_init__(self) -> None:
        if not self.nodes:
            raise ValueError("a cluster needs at least one node")
        names = [node.name for node in self.nodes]
        if len(set(names)) != len(names):
            raise ValueError(f"node names must differ: {names}")
        ports = [p for node in self.nodes for p in (node.client, node.cluster, node.mqtt, node.http)]
        if len(set(ports)) != len(ports):
            raise ValueError("every port of every node must differ (they share one host here)")

    @classmethod
    def from_pki(
        cls,
        pki: FleetPKI,
        vins: Iterable[str],
        *,
        nodes: Sequence[NatsNode],
        host: str = "127.0.0.1",
        policy: AclPolicy | None = None,
    ) -> NatsClusterConfig:
        """The cluster for the cars `vins`, the cloud, the operator and the named identities of `policy`."""
        policy = policy if policy is not None else AclPolicy()
        pki.ensure_ca()
        pki.ensure_server()
        organization = pki.organization
        users: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        for vin in vins:
            users[_subject(vin, organization)] = _subjects(g.resolve(vin) for g in policy.car_grants)
        for name, grants in policy.user_grants().items():
            users[_subject(name, organization)] = _subjects(grants)
        return cls(
            nodes=tuple(nodes),
            host=host,
            ca_file=pki.ca_cert_path.absolute(),
            cert_file=pki.server_paths.cert.absolute(),
            key_file=pki.server_paths.key.absolute(),
            users=users,
            stream_replicas=min(3, len(nodes)),
        )


def _subject(common_name: str, organization: str) -> str:
    # NATS maps a verified certificate to the user named by its subject in RFC 2253 order (last RDN first).
    return f"CN={common_name},O={organization}"


def mqtt_subject(topic: str) -> str:
    """The NATS subject of an MQTT topic or filter: levels joined by `.`, `+` as `*`, `#` as `>`."""
    levels = topic.split("/")
    if any("." in level or " " in level for level in levels):
        raise ValueError(f"{topic!r}: a topic level with '.' or a space has no NATS subject")
    return ".".join("*" if level == "+" else ">" if level == "#" else level for level in levels)


def _subjects(grants: Iterable[Grant]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    publish: list[str] = []
    subscribe: list[str] = [QOS1_INBOX]
    for grant in grants:
        subject = mqtt_subject(grant.topic)
        if grant.access.writes:
            publish.append(subject)
        if grant.access.reads:
            subscribe.append(subject)
    return tuple(publish), tuple(subscribe)


def _quoted(items: Iterable[str]) -> str:
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"


def render_node_config(config: NatsClusterConfig, index: int, store_dir: Path) -> str:
    """The configuration file of node `index` (0-based), storing JetStream data under `store_dir`."""
    node = config.nodes[index]
    routes = ", ".join(f"nats-route://{config.host}:{other.cluster}" for other in config.nodes if other != node)
    lines = [
        f"# tcu-sim: node {node.name} of a {len(config.nodes)}-node NATS cluster. Generated, do not edit.",
        f'server_name: "{node.name}"',
        f"listen: {config.host}:{node.client}",
        f"http: {config.host}:{node.http}",
        "jetstream {",
        f'  store_dir: "{store_dir}"',
        f"  max_memory_store: {config.max_memory_store}",
        f"  max_file_store: {config.max_file_store}",
        "}",
        "cluster {",
        f'  name: "{config.cluster_name}"',
        f"  listen: {config.host}:{node.cluster}",
        f"  routes: [{routes}]" if routes else "  routes: []",
        "}",
        "mqtt {",
        f"  listen: {config.host}:{node.mqtt}",
        f"  stream_replicas: {config.stream_replicas}",
        "  tls {",
        f'    cert_file: "{config.cert_file}"',
        f'    key_file: "{config.key_file}"',
        f'    ca_file: "{config.ca_file}"',
        "    verify_and_map: true  # the client certificate's subject is the user",
        "    timeout: 5",
        "  }",
        "}",
        "authorization {",
        "  users: [",
    ]
    for user, (publish, subscribe) in config.users.items():
        lines.append(
            f'    {{user: "{user}", allowed_connection_types: ["MQTT"], permissions: '
            f"{{publish: {{allow: {_quoted(publish)}}}, subscribe: {{allow: {_quoted(subscribe)}}}}}}}"
        )
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


def write_cluster_config(directory: Path, config: NatsClusterConfig) -> list[Path]:
    """Write `node-<i>.conf` for every node into `directory` (JetStream data in `directory/node-<i>/`)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(len(config.nodes)):
        path = directory / f"node-{index}.conf"
        text = render_node_config(config, index, (directory / f"node-{index}").absolute())
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        paths.append(path)
    return paths
