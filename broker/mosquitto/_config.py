"""Mosquitto 2.0 configuration for a tcu-sim fleet: two TLS listeners, ACL files, password file, persistence.

    <dir>/mosquitto.conf    per_listener_settings true; device listener (mutual TLS) and app listener
    <dir>/device.acl        cars, cloud, operator (see `_acl`)
    <dir>/app.acl           apps
    <dir>/passwords         app credentials ($7$ PBKDF2-SHA512, mode 0600)
    <dir>/data/             persistence: sessions, subscriptions and queued QoS 1 messages survive a restart

Mosquitto reads the CRL only at start and on reload (SIGHUP): revoke, then reload. A revoked client that is
connected stays connected until it reconnects (restart the broker to cut it off at once). Mosquitto started as root
drops to the `mosquitto` user unless `user` says otherwise; the keys are 0600, so `run_as_user` must name the
user that owns them (the test harness passes the current user).

Known limits of Mosquitto 2.0 with ACL files (see docs in `AclPolicy`): a SUBSCRIBE is always granted and every
message is checked on delivery instead (a car subscribed to `#` receives only its own topics); a denied PUBLISH
is dropped (MQTT 5: PUBACK reason 0x87); the retain flag cannot be forbidden per topic; on the device listener a
client would choose its client id — so the device listener forces it to the certificate's CN
(`use_username_as_clientid` after `use_identity_as_username`, SPEC §7): a car presenting another car's VIN as
client id gets its own session, never the other car's, and the other car stays connected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from broker.pki import DEFAULT_SERVER_NAMES, FleetPKI
from tcu_sim.protocol import ProtocolError, Topics

from ._acl import AclPolicy
from ._passwords import hash_password, read_password_file, write_password_file

__all__ = ["LogType", "MosquittoConfig", "MosquittoFiles", "render_config", "write_config"]

LogType = Literal["error", "warning", "notice", "information", "subscribe", "unsubscribe", "debug", "all"]


def _check_prefix(prefix: str) -> str:
    try:
        return Topics(prefix).prefix
    except ProtocolError as exc:
        raise ValueError(exc.detail) from None


def _no_newline(path: Path) -> Path:
    if "\n" in str(path) or "\r" in str(path):
        raise ValueError("a path in the Mosquitto configuration must not contain a line break")
    return path


_ConfPath = Annotated[Path, AfterValidator(_no_newline)]


class MosquittoConfig(BaseModel):
    """Everything `render_config` needs: listeners, TLS files, topic prefix, persistence and limits.

    Build it from a fleet PKI with `MosquittoConfig.from_pki(pki, ...)`, which makes sure the CA, the broker's
    certificate and the CRL exist.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8883, ge=1, le=65535, description="device listener: cars, cloud, operator (mutual TLS)")
    app_port: int | None = Field(8884, ge=1, le=65535, description="app listener (username + password); None: off")
    app_tls: bool = True
    ca_file: _ConfPath
    cert_file: _ConfPath
    key_file: _ConfPath
    crl_file: _ConfPath
    topic_prefix: Annotated[str, AfterValidator(_check_prefix)] = ""
    persistence: bool = True
    autosave_interval: int = Field(60, ge=0)
    autosave_on_changes: bool = False
    persistent_client_expiration: str | None = Field(None, pattern=r"^[0-9]+[hdwmy]$")
    run_as_user: str | None = Field(None, pattern=r"^[A-Za-z0-9._-]+$")
    log_file: _ConfPath | None = None
    log_types: tuple[LogType, ...] = ("error", "warning", "notice", "information")
    max_packet_size: int | None = Field(262_144, ge=1024)
    max_queued_messages: int = Field(1000, ge=0)
    max_inflight_messages: int = Field(20, ge=0)
    tls_min_version: Literal["tlsv1.2", "tlsv1.3"] = "tlsv1.2"

    @classmethod
    def from_pki(cls, pki: FleetPKI, *, host: str = "127.0.0.1", **settings: object) -> MosquittoConfig:
        """A configuration using `pki`'s CA, server certificate (issued if missing, naming `host`) and CRL."""
        pki.ensure_ca()
        names = DEFAULT_SERVER_NAMES if host in DEFAULT_SERVER_NAMES else (*DEFAULT_SERVER_NAMES, host)
        server = pki.ensure_server(names)
        return cls.model_validate(
            {
                "host": host,
                "ca_file": pki.ca_cert_path,
                "cert_file": server.paths.cert,
                "key_file": server.paths.key,
                "crl_file": pki.crl_path,
                **settings,
            }
        )


@dataclass(frozen=True, slots=True)
class MosquittoFiles:
    """Where `write_config` put everything (all paths absolute)."""

    directory: Path
    config: Path
    device_acl: Path
    app_acl: Path
    passwords: Path
    persistence_dir: Path

    @classmethod
    def in_directory(cls, directory: Path) -> MosquittoFiles:
        """The standard layout inside `directory`."""
        directory = directory.absolute()
        return cls(
            directory=directory,
            config=directory / "mosquitto.conf",
            device_acl=directory / "device.acl",
            app_acl=directory / "app.acl",
            passwords=directory / "passwords",
            persistence_dir=directory / "data",
        )


def render_config(config: MosquittoConfig, files: MosquittoFiles) -> str:
    """The text of `mosquitto.conf` for `config`, referring to the ACL, password and data paths in `files`."""
    out = [
        "# tcu-sim Mosquitto configuration. Generated (tcu-sim broker config): regenerate instead of editing.",
        "# Mosquitto reads the CRL at start and on reload: after `tcu-sim pki revoke`, send SIGHUP.",
        "per_listener_settings true",
    ]
    if config.run_as_user:
        out.append(f"user {config.run_as_user}")
    out += [
        "",
        "# Sessions, subscriptions, retained and queued QoS 1 messages survive a restart.",
        f"persistence {_bool(config.persistence)}",
    ]
    if config.persistence:
        out += [
            f"persistence_location {files.persistence_dir}/",
            f"autosave_interval {config.autosave_interval}",
            f"autosave_on_changes {_bool(config.autosave_on_changes)}",
        ]
    if config.persistent_client_expiration:
        out.append(f"persistent_client_expiration {config.persistent_client_expiration}")
    out += [
        f"max_queued_messages {config.max_queued_messages}",
        f"max_inflight_messages {config.max_inflight_messages}",
        # Small MQTT packets must not wait for Nagle's algorithm (~40 ms a hop for apps and the cloud).
        "set_tcp_nodelay true",
    ]
    if config.max_packet_size:
        out.append(f"max_packet_size {config.max_packet_size}")
    out += ["", f"log_dest {'file ' + str(config.log_file) if config.log_file else 'stderr'}"]
    out += [f"log_type {log_type}" for log_type in config.log_types]
    out += ["log_timestamp true", "connection_messages true"]

    out += [
        "",
        "# Device listener: cars (CN = VIN), clouds (CN cloud, cloud-2, ...), operators. Mutual TLS; the",
        "# certificate's CN is the MQTT username and the client id (whatever id the CONNECT asked for, so no",
        "# holder of a certificate can take over another identity's session), and the ACL gives each car its",
        "# own topics only.",
        f"listener {config.port} {config.host}",
        "protocol mqtt",
        "allow_anonymous false",
        "require_certificate true",
        "use_identity_as_username true",
        "use_username_as_clientid true",
        f"cafile {config.ca_file}",
        f"certfile {config.cert_file}",
        f"keyfile {config.key_file}",
        f"crlfile {config.crl_file}",
        f"tls_version {config.tls_min_version}",
        f"acl_file {files.device_acl}",
    ]
    if config.app_port is not None:
        out += [
            "",
            "# App listener: username + password (no client certificate). The client id is forced to the",
            "# username, so the id in app/<client id>/... is always who logged in.",
            f"listener {config.app_port} {config.host}",
            "protocol mqtt",
            "allow_anonymous false",
            f"password_file {files.passwords}",
            f"acl_file {files.app_acl}",
            "use_username_as_clientid true",
        ]
        if config.app_tls:
            out += [
                f"certfile {config.cert_file}",
                f"keyfile {config.key_file}",
                f"tls_version {config.tls_min_version}",
            ]
    return "\n".join(out) + "\n"


def write_config(
    directory: Path,
    config: MosquittoConfig,
    *,
    policy: AclPolicy | None = None,
    app_users: Mapping[str, str] | None = None,
) -> MosquittoFiles:
    """Write mosquitto.conf, both ACL files and the password file into `directory`; return their paths.

    `policy` defaults to `AclPolicy(config.topic_prefix)`. `app_users` maps app usernames to passwords (hashed
    here; the plaintext is not kept): given, it replaces the password file; None keeps the existing file
    (an empty one is created when there is none), so regenerating the configuration keeps the apps' logins.
    """
    files = MosquittoFiles.in_directory(directory)
    if policy is None:
        policy = AclPolicy(config.topic_prefix)
    elif policy.prefix != config.topic_prefix:
        raise ValueError(f"ACL prefix {policy.prefix!r} differs from the topic prefix {config.topic_prefix!r}")
    files.directory.mkdir(parents=True, exist_ok=True)
    if config.persistence:
        files.persistence_dir.mkdir(exist_ok=True)
    if app_users is not None:
        write_password_file(files.passwords, {user: hash_password(pw) for user, pw in app_users.items()})
    elif not files.passwords.exists():
        write_password_file(files.passwords, {})
    else:
        write_password_file(files.passwords, read_password_file(files.passwords))  # validates what is there
    files.device_acl.write_text(policy.render_device_acl(), encoding="utf-8")
    files.app_acl.write_text(policy.render_app_acl(), encoding="utf-8")
    files.config.write_text(render_config(config, files), encoding="utf-8")
    return files


def _bool(value: bool) -> str:
    return "true" if value else "false"
