"""A NATS cluster (MQTT gateway + JetStream) for a tcu-sim fleet (issue 17, SPEC §9): configuration and launcher.

    config = NatsClusterConfig.from_pki(pki, vins, nodes=[NatsNode("n0", 4222, 6222, 8883, 8222), ...])
    write_cluster_config(out_dir, config)                  # nats-server -c out_dir/node-0.conf, ...

    async with NatsCluster(directory, pki, vins, nodes=3) as cluster:
        ...                                                # cluster.urls, cluster.client(vin, node=1), kill_node(1)

The same identities (mutual TLS, certificate subject = user) and per-car permissions as the Mosquitto
configuration (`broker.mosquitto.AclPolicy`); what NATS lacks against the contract is in docs/scale-out.md.
"""

from __future__ import annotations

from ._cluster import NatsCluster, NatsError, NatsNotFound, find_nats_server
from ._config import NatsClusterConfig, NatsNode, mqtt_subject, render_node_config, write_cluster_config

__all__ = [
    "NatsCluster",
    "NatsClusterConfig",
    "NatsError",
    "NatsNode",
    "NatsNotFound",
    "find_nats_server",
    "mqtt_subject",
    "render_node_config",
    "write_cluster_config",
]
