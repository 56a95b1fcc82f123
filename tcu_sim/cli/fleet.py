"""`tcu-sim fleet ...`: check a fleet file, print its JSON Schema, provision keys, run the fleet."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import click

from tcu_sim.cli._metrics import metrics_option, serve_metrics
from tcu_sim.cli._state import hold_state
from tcu_sim.clock import SystemClock
from tcu_sim.faults import FleetFaults
from tcu_sim.fleet import (
    FleetConfig,
    FleetConfigError,
    FleetError,
    FleetRunner,
    Shard,
    StateDir,
    expand_fleet,
    fleet_schema_json,
    load_fleet,
    parse_broker_urls,
    parse_shard,
    provision,
    raise_open_files_limit,
    select_shard,
)

__all__ = ["SHARD", "ShardParamType", "fleet", "load_fleet_or_fail"]

fleet = click.Group("fleet", help="Fleet files: validate, print the schema, provision keys.")


# Unsubscripted: ParamType is generic only from click 8.2 on, and pyproject allows 8.1.
class ShardParamType(click.ParamType):  # type: ignore[type-arg]  # see the comment above
    """A `--shard i/n` option value (1-based: `1/4` .. `4/4`), converted to a `Shard`."""

    name = "i/n"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> Shard:
        if isinstance(value, Shard):
            return value
        try:
            return parse_shard(str(value))
        except FleetError as exc:
            self.fail(str(exc), param, ctx)


SHARD = ShardParamType()

_FLEET_FILE = click.Path(dir_okay=False, path_type=Path)


def load_fleet_or_fail(path: Path) -> FleetConfig:
    """Load a fleet file or end the command with its error (file, path, problem) and no traceback."""
    try:
        return load_fleet(path)
    except FleetConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


@fleet.command("validate")
@click.argument("file", type=_FLEET_FILE)
@click.option("--list", "list_cars", is_flag=True, help="Also print every car of the expanded fleet.")
def validate(file: Path, list_cars: bool) -> None:
    """Check FILE; print a summary, or what is wrong (file, path inside it, problem) and exit 1."""
    config = load_fleet_or_fail(file)
    click.echo(
        f"{file}: ok: fleet {config.name!r} (seed {config.seed}): {_plural(config.car_count, 'car')} in "
        f"{_plural(len(config.groups), 'group')}, {_plural(len(config.zones), 'zone')}, "
        f"{_plural(len(config.users), 'user')}, {_plural(len(config.scenario), 'scenario step')}"
    )
    if list_cars:
        for car in expand_fleet(config):
            click.echo(
                f"{car.index:>6}  {car.vin}  {car.group:<16} {car.model.value:<10} {car.equipment.value:<13}"
                f" {car.home.lat:>10.6f} {car.home.lon:>11.6f}  {car.connectivity.profile.value:<7}"
                f" {car.registered_at.isoformat()}"
            )


@fleet.command("schema")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file instead of stdout.",
)
def schema(output: Path | None) -> None:
    """Print the JSON Schema of the fleet file format (for editors; fleet_configs/fleet.schema.json)."""
    text = fleet_schema_json()
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"{output}: cannot write: {exc.strerror or exc}") from None
    click.echo(f"wrote {output}")


@fleet.command("provision")
@click.argument("file", type=_FLEET_FILE)
@click.option(
    "--state",
    "state_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="State directory to create or complete (keys, JWKS, manifest, certificates).",
)
@click.option("--no-pki", is_flag=True, help="Skip the mTLS certificates.")
def provision_command(file: Path, state_dir: Path, no_pki: bool) -> None:
    """Write the keys of FILE's cars, the fleet and cloud JWKS, the cloud key and the manifest into --state.

    Idempotent: existing keys are kept, new cars are added.
    """
    config = load_fleet_or_fail(file)
    started = time.perf_counter()
    try:
        result = provision(config, state_dir, clock=SystemClock(), pki=not no_pki)
    except FleetError as exc:
        raise click.ClickException(str(exc)) from None
    elapsed = time.perf_counter() - started
    done = [f"{len(result.added)} new keys", f"{result.kept} kept"]
    if result.cloud_key_created:
        done.append("cloud key created")
    if result.certificates is not None:
        done.append(f"{_plural(result.certificates, 'certificate')} issued")
    click.echo(
        f"{state_dir}: fleet {config.name!r}: {_plural(result.vehicles, 'car')} provisioned "
        f"({', '.join(done)}) in {elapsed:.2f} s"
    )
    if result.pki_note:
        click.echo(f"note: {result.pki_note}", err=True)


@fleet.command("run")
@click.argument("file", type=_FLEET_FILE)
@click.option(
    "--broker",
    "broker_url",
    default=None,
    help="mqtts://host:port (mTLS with the fleet PKI) or mqtt://; several, comma-separated, for the nodes of a "
    "cluster (a car fails over to the next). Default: the fleet file's `brokers`.",
)
@click.option(
    "--state",
    "state_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="State directory (default .tcu-sim/<fleet name>); provisioned first if needed.",
)
@click.option("--shard", type=SHARD, default=None, help="Run only share i of n of the fleet (e.g. 2/4).")
@click.option("--time-scale", type=click.FloatRange(min=0.001), default=1.0, show_default=True,
              help="Simulated seconds per real second (60: an hour of heater time in a minute).")
@click.option("--max-handshakes", type=click.IntRange(min=1), default=32, show_default=True,
              help="TLS handshakes at once (bounds the connect rate of a start or a reconnect storm).")
@click.option("--report-every", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="Seconds between progress lines (0: none).")
@metrics_option
def run_command(
    file: Path,
    broker_url: str | None,
    state_dir: Path | None,
    shard: Shard | None,
    time_scale: float,
    max_handshakes: int,
    report_every: float,
    metrics_port: int | None,
) -> None:
    """Bring up every car of FILE (or of its --shard) against --broker, until Ctrl-C."""
    config = load_fleet_or_fail(file)
    if broker_url is None and not config.brokers:
        raise click.UsageError("no broker: give --broker URL[,URL...] or `brokers:` in the fleet file")
    try:
        brokers = parse_broker_urls(broker_url if broker_url is not None else ",".join(config.brokers))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    broker = brokers[0]
    state = Path(state_dir) if state_dir is not None else Path(".tcu-sim") / config.name
    clock = SystemClock(scale=time_scale)
    cars = expand_fleet(config)
    if shard is not None:
        cars = select_shard(cars, shard.index, shard.count)
    # One fleet per shard on a state directory, beside its cloud; never beside a whole `up` (exit 2).
    lock = hold_state(state, "fleet run", role="fleet" if shard is None else f"fleet-{shard.index}of{shard.count}")
    try:
        provision(cars, state, clock=SystemClock(), pki=broker.tls)
    except FleetError as exc:
        raise click.ClickException(str(exc)) from None
    soft, _ = raise_open_files_limit(len(cars) + 1024)  # each car holds a socket
    if len(cars) + 256 > soft:
        click.echo(f"warning: open-file limit {soft} is low for {len(cars)} cars (raise `ulimit -n`)", err=True)

    async def main() -> None:
        runner = FleetRunner(
            cars,
            state=StateDir(state),
            broker=brokers,
            clock=clock,
            topic_prefix=config.topic_prefix,
            max_concurrent_handshakes=max_handshakes,
            # The fleet file's connectivity profiles, no-signal zones and fault timeline, and live `fault` controls.
            faults=FleetFaults.from_config(config, run_timeline=True),
        )
        async with serve_metrics(metrics_port, runner.events, fleet=lambda: runner.sessions), runner:
            elapsed = await runner.wait_all_online(timeout=max(60.0, len(cars) / 50))
            click.echo(f"fleet {config.name!r}: {len(cars)} cars online after {elapsed:.2f} s", err=True)
            while True:
                await asyncio.sleep(report_every or 3600)
                if report_every:
                    published = sum(s.stats.published for s in runner.sessions.values())
                    click.echo(f"online {runner.online_count}/{len(cars)}, published {published}", err=True)

    try:
        _run_until_signal(main())
    finally:
        lock.release()


def _run_until_signal(coro: Coroutine[Any, Any, None]) -> None:
    """Run `coro` until it ends, Ctrl-C or SIGTERM; exit cleanly (contexts closed) on either signal."""
    async def guarded() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await coro

    try:
        asyncio.run(guarded())
    except TimeoutError as exc:
        raise click.ClickException(str(exc)) from None
