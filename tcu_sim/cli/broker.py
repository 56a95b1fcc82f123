"""`tcu-sim broker ...`: generate a Mosquitto configuration for a provisioned fleet, and manage app logins."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from pydantic import ValidationError

from broker.cloud import ManifestError, read_manifest
from broker.mosquitto import (
    AclPolicy,
    MosquittoConfig,
    MosquittoFiles,
    hash_password,
    read_password_file,
    validate_app_username,
    write_config,
    write_password_file,
)
from broker.nats import NatsClusterConfig, NatsNode, write_cluster_config
from broker.pki import PKIError

from .pki import pki_for_state

__all__ = ["broker"]

broker = click.Group("broker", help="Broker set-up: Mosquitto configuration, ACLs and app logins.")


def _manifest_prefix(state_dir: Path) -> str:
    """The fleet's topic prefix from `<state>/vehicles.json` ("" when there is no manifest)."""
    path = state_dir / "vehicles.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return ""
    except (ValueError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"{path}: not valid JSON ({exc})") from None
    prefix = data.get("topic_prefix", "") if isinstance(data, dict) else ""
    if not isinstance(prefix, str):
        raise click.ClickException(f"{path}: topic_prefix: must be a string")
    return prefix


@broker.command("config")
@click.option(
    "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Where to write."
)
@click.option(
    "--state",
    "state_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The provisioned state directory (its pki/ is used, and created if missing).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address both listeners bind to.")
@click.option("--port", default=8883, show_default=True, type=click.IntRange(1, 65535), help="Device listener (mTLS).")
@click.option("--app-port", default=8884, show_default=True, type=click.IntRange(1, 65535), help="App listener.")
@click.option("--no-app-listener", is_flag=True, help="No app listener (cars, cloud and operator only).")
@click.option("--app-plaintext", is_flag=True, help="App listener without TLS (a local demo only).")
@click.option("--prefix", default=None, help="Topic prefix (default: the fleet's, from <state>/vehicles.json).")
@click.option("--run-as", default=None, help="The user Mosquitto runs as when started as root (must read the keys).")
@click.option("--log-file", type=click.Path(dir_okay=False, path_type=Path), help="Log to this file (default: stderr).")
@click.option("--no-persistence", is_flag=True, help="Keep sessions and queued messages in memory only.")
@click.option(
    "--kind",
    type=click.Choice(["mosquitto", "nats"]),
    default="mosquitto",
    show_default=True,
    help="mosquitto: one broker; nats: an N-node NATS cluster (MQTT gateway + JetStream), docs/scale-out.md.",
)
@click.option("--nodes", default=3, show_default=True, type=click.IntRange(1, 32), help="nats: cluster size.")
def config_command(
    out_dir: Path,
    state_dir: Path,
    host: str,
    port: int,
    app_port: int,
    no_app_listener: bool,
    app_plaintext: bool,
    prefix: str | None,
    run_as: str | None,
    log_file: Path | None,
    no_persistence: bool,
    kind: str,
    nodes: int,
) -> None:
    """Write mosquitto.conf, the ACL files and the password file into --out (app logins already there are kept);
    with --kind nats, one configuration file per node of a NATS cluster."""
    fleet_pki = pki_for_state(state_dir)
    topic_prefix = prefix if prefix is not None else _manifest_prefix(state_dir)
    if kind == "nats":
        _nats_config(out_dir, state_dir, host=host, port=port, nodes=nodes, topic_prefix=topic_prefix)
        return
    try:
        fleet_pki.ensure_cloud()
        fleet_pki.ensure_operator()
        config = MosquittoConfig.from_pki(
            fleet_pki,
            host=host,
            port=port,
            app_port=None if no_app_listener else app_port,
            app_tls=not app_plaintext,
            topic_prefix=topic_prefix,
            run_as_user=run_as,
            log_file=log_file.absolute() if log_file else None,
            persistence=not no_persistence,
        )
        files = write_config(out_dir, config)
    except PKIError as exc:
        raise click.ClickException(f"{fleet_pki.directory}: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise click.ClickException(f"{out_dir}: {problems}") from None
    except ValueError as exc:  # a damaged password file
        raise click.ClickException(f"{out_dir}: {exc}") from None
    click.echo(
        f"{files.config}: device listener {host}:{port} (mTLS)"
        + ("" if no_app_listener else f", app listener {host}:{app_port}")
    )
    click.echo(f"  ACLs: {files.device_acl}, {files.app_acl}; app logins: {files.passwords}")
    if topic_prefix:
        click.echo(f"  topic prefix: {topic_prefix}")
    click.echo(f"run: mosquitto -c {files.config}")


def _nats_config(out_dir: Path, state_dir: Path, *, host: str, port: int, nodes: int, topic_prefix: str) -> None:
    """Node i listens for MQTT on --port + i, NATS clients on 4222 + i, routes on 6222 + i, monitoring on 8222 + i
    (on one host; across hosts, edit the addresses or give each host its own --host)."""
    fleet_pki = pki_for_state(state_dir)
    try:
        vins = [record.vin for record in read_manifest(state_dir / "vehicles.json").vehicles]
    except ManifestError as exc:
        raise click.ClickException(f"{exc} (provision the fleet first: tcu-sim fleet provision)") from None
    if port + nodes - 1 > 65535:
        raise click.ClickException(f"--port {port}: no room for {nodes} nodes")
    cluster = [NatsNode(f"n{i}", client=4222 + i, cluster=6222 + i, mqtt=port + i, http=8222 + i) for i in range(nodes)]
    try:
        config = NatsClusterConfig.from_pki(fleet_pki, vins, nodes=cluster, host=host, policy=AclPolicy(topic_prefix))
        paths = write_cluster_config(out_dir, config)
    except PKIError as exc:
        raise click.ClickException(f"{fleet_pki.directory}: {exc}") from None
    except ValueError as exc:
        raise click.ClickException(f"{out_dir}: {exc}") from None
    click.echo(f"{out_dir}: a {nodes}-node NATS cluster for {len(vins)} cars (MQTT over mutual TLS, JetStream)")
    for node, path in zip(cluster, paths, strict=True):
        click.echo(f"  {node.name}: mqtts://{host}:{node.mqtt}  run: nats-server -c {path}")
    click.echo(f"cars: tcu-sim fleet run --broker {','.join(f'mqtts://{host}:{n.mqtt}' for n in cluster)} ...")


@broker.command("passwd")
@click.argument("username")
@click.option(
    "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="The broker directory."
)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input instead of prompting.")
@click.option("--delete", is_flag=True, help="Remove USERNAME instead.")
def passwd_command(username: str, out_dir: Path, password_stdin: bool, delete: bool) -> None:
    """Set (or --delete) the broker login of the app USERNAME; reload the broker afterwards (SIGHUP)."""
    files = MosquittoFiles.in_directory(out_dir)
    try:
        validate_app_username(username)
        hashes = read_password_file(files.passwords)
    except (PKIError, ValueError) as exc:
        raise click.ClickException(f"{files.passwords}: {exc}") from None
    if delete:
        if hashes.pop(username, None) is None:
            raise click.ClickException(f"{files.passwords}: {username}: no such app login")
    else:
        if password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = click.prompt("password", hide_input=True, confirmation_prompt=True)
        if not password:
            raise click.ClickException(f"{files.passwords}: {username}: the password must not be empty")
        hashes[username] = hash_password(password)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_password_file(files.passwords, hashes)
    click.echo(f"{files.passwords}: {'removed' if delete else 'set'} {username}; reload the broker (kill -HUP <pid>)")
