"""Mosquitto set-up for a tcu-sim fleet (issue 5): configuration, ACL files and app passwords.

    pki = FleetPKI(state / "pki")
    config = MosquittoConfig.from_pki(pki, port=8883, app_port=8884, topic_prefix="")
    files = write_config(out_dir, config, app_users={"demo-app": "..."})
    # mosquitto -c files.config

The access rules themselves (`AclPolicy`) are plain data, also evaluated by the embedded broker.
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

__all__ = [
    "DEFAULT_ITERATIONS",
    "USERNAME",
    "AclAction",
    "AclPolicy",
    "Grant",
    "GrantAccess",
    "ListenerKind",
    "LogType",
    "MosquittoConfig",
    "MosquittoFiles",
    "filter_covers",
    "hash_password",
    "read_password_file",
    "render_config",
    "render_password_file",
    "topic_matches",
    "validate_app_username",
    "verify_password",
    "write_config",
    "write_password_file",
]
