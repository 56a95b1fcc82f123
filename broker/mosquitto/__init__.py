"""Mosquitto for a tcu-sim fleet (issue 5): configuration, ACL files and app passwords, and the process.

    pki = FleetPKI(state / "pki")
    config = MosquittoConfig.from_pki(pki, port=8883, app_port=8884, topic_prefix="")
    files = write_config(out_dir, config, app_users={"demo-app": "..."})
    # mosquitto -c files.config

    async with MosquittoBroker(state / "broker", pki, app_users={"demo-app": "..."}) as broker:
        ...                                                 # broker.port, broker.app_port, broker.client(vin)

The access rules themselves (`AclPolicy`) are plain data, also evaluated by the embedded broker. `MosquittoBroker`
is the one launcher of a Mosquitto process (the stack, scenarios, the bench and the test harness use it);
`probe_connect` asks a broker in one MQTT CONNECT whether it lets a client in, naming the TLS alert if not.
"""

from __future__ import annotations

from ._acl import (
    USERNAME,
    AclAction,
    AclPolicy,
    Grant,
    GrantAccess,
    ListenerKind,
    filter_covers,
    topic_matches,
)
from ._config import LogType, MosquittoConfig, MosquittoFiles, render_config, write_config
from ._passwords import (
    DEFAULT_ITERATIONS,
    hash_password,
    read_password_file,
    render_password_file,
    validate_app_username,
    verify_password,
    write_password_file,
)
from ._probe import ConnectOutcome, probe_connect
from ._process import MosquittoBroker, MosquittoError, MosquittoNotFound, find_executable, find_mosquitto, free_ports

__all__ = [
    "DEFAULT_ITERATIONS",
    "USERNAME",
    "AclAction",
    "AclPolicy",
    "ConnectOutcome",
    "Grant",
    "GrantAccess",
    "ListenerKind",
    "LogType",
    "MosquittoBroker",
    "MosquittoConfig",
    "MosquittoError",
    "MosquittoFiles",
    "MosquittoNotFound",
    "filter_covers",
    "find_executable",
    "find_mosquitto",
    "free_ports",
    "hash_password",
    "probe_connect",
    "read_password_file",
    "render_config",
    "render_password_file",
    "topic_matches",
    "validate_app_username",
    "verify_password",
    "write_config",
    "write_password_file",
]
