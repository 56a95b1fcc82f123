"""`tcu-sim record OUT`, `tcu-sim record show FILE`, `tcu-sim replay FILE`: a run's traffic to a file, the file as
a timeline, and the file's app and operator side replayed against a fresh stack.

    tcu-sim up fleet_configs/demo.yaml --record run.jsonl.gz          # record from the start of the stack
    tcu-sim record run.jsonl.gz --state .tcu-sim/demo --fleet fleet_configs/demo.yaml   # beside a running stack
    tcu-sim record show run.jsonl.gz
    tcu-sim replay run.jsonl.gz --junit replay.xml                    # exit 1 on a divergence, 2 on a bad file
    tcu-sim replay run.jsonl.gz --cloud-config spin_max_tries=2       # what a changed rule would have done

`record` connects as the `recorder` identity (read-only on every car, app and control topic; its certificate is
issued from the state's fleet PKI on first use) to the broker of the stack running on `--state`
(`<state>/endpoints.json`), or `--broker`. It records until Ctrl-C, SIGTERM or `--duration`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from broker.cloud import CloudConfig
from broker.pki import RECORDER, FleetPKI, PKIError
from tcu_sim._version import __version__
from tcu_sim.cli._broker_url import device_broker_url, parse_broker_url, tls_context
from tcu_sim.cli.car import parse_params
from tcu_sim.cli.fleet import load_fleet_or_fail
from tcu_sim.clock import SystemClock
from tcu_sim.record import (
    Header,
    Recorder,
    RecordingError,
    RecordingWriter,
    ReplayError,
    ReplayOptions,
    UserSecrets,
    junit_xml,
    read_recording,
    replay,
    timeline,
)
from tcu_sim.stack import BrokerChoice, StackError

__all__ = ["record", "replay_command"]


class _RecordGroup(click.Group):
    """`record OUT ...` records; `record show FILE` shows: a first argument that is no subcommand records."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["start", *args]
        return super().parse_args(ctx, args)


@click.group("record", cls=_RecordGroup)
def record() -> None:
    """Record every message on the car, app and control topics (`record OUT [--state DIR] [--fleet FILE]`, the
    same as `record start OUT ...`), or show a recording (`record show FILE`)."""


@record.command("start")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--state", "state_dir", type=click.Path(file_okay=False, path_type=Path), default=Path(".tcu-sim/demo"),
              show_default=True, help="State directory of the running stack (its broker, its fleet PKI).")
@click.option("--broker", "broker_url", default=None,
              help="Device listener of the broker (mutual TLS as `recorder`). [default: the broker of the stack "
                   "running on --state]")
@click.option("--fleet", "fleet_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The stack's fleet file: named in the header (a replay starts it) and used to tell, without "
                   "writing them, whether a redacted password or S-PIN was the user's own.")
@click.option("--duration", type=click.FloatRange(min=0), default=None, help="Stop after this many seconds.")
@click.option("--messages", type=click.IntRange(min=1), default=None,
              help="Stop after this many messages (retained ones included).")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Seconds to wait for the broker.")
def record_start(
    out: Path, state_dir: Path, broker_url: str | None, fleet_file: Path | None, duration: float | None,
    messages: int | None, timeout: float,
) -> None:
    """Record to OUT (gzip JSON Lines) until Ctrl-C."""
    url = device_broker_url(broker_url, state_dir)
    broker = parse_broker_url(url)
    fleet = load_fleet_or_fail(fleet_file) if fleet_file is not None else None
    tls = None
    if broker.tls:
        pki = FleetPKI(state_dir / "pki")
        if not pki.has_ca():
            raise click.ClickException(f"{pki.directory}: no fleet CA here (give the stack's --state)")
        try:
            pki.ensure_identity(RECORDER)
        except PKIError as exc:
            raise click.ClickException(f"{pki.directory}: {exc}") from None
        paths = pki.paths(RECORDER)
        tls = tls_context(ca=pki.ca_cert_path, cert=paths.cert, key=paths.key)
    clock = SystemClock()  # another process's stack: its own clock is not visible here (see docs/record-replay.md)
    header = Header(
        fleet=str(fleet_file) if fleet_file is not None else None, seed=fleet.seed if fleet else None,
        started_at=time.time(), virtual_started_at=clock.now(), fleet_name=fleet.name if fleet else None,
        topic_prefix=fleet.topic_prefix if fleet else "", tool=f"tcu-sim {__version__}",
    )
    users = [UserSecrets(u.email, u.password.get_secret_value(), u.spin.get_secret_value())
             for u in (fleet.users if fleet else ())]

    async def run() -> int:
        writer = RecordingWriter(out, header)
        try:
            async with Recorder(broker, tls, sink=writer, clock=clock, users=users,
                                topic_prefix=header.topic_prefix) as recorder:
                try:
                    await recorder.wait_ready(timeout)
                except TimeoutError as exc:
                    raise click.ClickException(str(exc)) from None
                click.echo(f"recording {broker} to {out} (Ctrl-C stops)", err=True)
                with contextlib.suppress(TimeoutError):
                    if messages is not None:
                        await recorder.wait_records(messages, duration)
                    else:
                        async with asyncio.timeout(duration):
                            await asyncio.Event().wait()  # until the time is up or a signal cancels us
                return recorder.count
        finally:
            writer.close()

    count = _run_until_signal(run())
    click.echo(f"recorded {count if count is not None else 'the'} messages to {out}", err=True)


@record.command("show")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def record_show(file: Path) -> None:
    """Print the recording FILE as a timeline: virtual time, direction, topic kind, VIN or client, what it says."""
    try:
        recording = read_recording(file)
    except RecordingError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    for line in timeline(recording):
        click.echo(line)


def _cloud_settings(pairs: tuple[str, ...]) -> dict[str, Any]:
    out = parse_params(pairs, param_hint="--cloud-config")
    try:
        CloudConfig.model_validate(out)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise click.BadParameter(problems, param_hint="--cloud-config") from None
    return out


@click.command("replay")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--fleet", "fleet_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Fleet file to start (default: the one the recording names; its seed is the recording's).")
@click.option("--secrets", "secrets_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help='Passwords and S-PINs of users the fleet file lacks: {"users": {"EMAIL": {"password": ..., '
                   '"spin": ...}}}.')
@click.option("--cloud-config", "cloud_config", multiple=True, metavar="KEY=VALUE",
              help="Change a rule of the replay's cloud (a CloudConfig field), e.g. spin_max_tries=2. Repeatable.")
@click.option("--junit", "junit_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the comparison as JUnit XML here.")
@click.option("--embedded", is_flag=True, help="Replay on the embedded amqtt broker even when Mosquitto is installed.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Real seconds to wait for each answer of the replay's stack.")
def replay_command(
    file: Path, fleet_file: Path | None, secrets_file: Path | None, cloud_config: tuple[str, ...],
    junit_path: Path | None, embedded: bool, timeout: float,
) -> None:
    """Replay the app and operator side of the recording FILE against a fresh stack (same fleet file and seed,
    virtual clock) and report every divergence. Exit 0: none; 1: divergences; 2: a file that cannot be replayed."""
    try:
        recording = read_recording(file)
    except RecordingError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    options = ReplayOptions(
        fleet=fleet_file, secrets=secrets_file, cloud_overrides=_cloud_settings(cloud_config),
        broker=BrokerChoice.EMBEDDED if embedded else BrokerChoice.AUTO, answer_timeout_s=timeout,
    )
    try:
        report = asyncio.run(replay(recording, options))
    except ReplayError as exc:
        click.echo(f"Error: {file}: {exc}", err=True)
        sys.exit(2)
    except (StackError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(report.text())
    if junit_path is not None:
        junit_path.write_bytes(junit_xml(report.checked, report.divergences, name=f"replay {file.name}"))
    sys.exit(0 if report.ok else 1)


def _run_until_signal(coro: Any) -> Any:
    """Run `coro`; Ctrl-C or SIGTERM cancels it (the recording is closed properly) and returns None."""

    async def guarded() -> Any:
        task = asyncio.current_task()
        assert task is not None  # inside asyncio.run
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            return await coro
        return None

    return asyncio.run(guarded())
