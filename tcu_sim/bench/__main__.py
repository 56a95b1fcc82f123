"""`python -m tcu_sim.bench` (what `make bench` runs): the SPEC §6 figures, printed as a table."""

from __future__ import annotations

import asyncio
import shlex
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import click

from tcu_sim.bench._report import BenchReport, render_table
from tcu_sim.bench._run import BenchOptions, run_bench
from tcu_sim.logging import configure_logging

__all__ = ["main"]


def _sizes(value: str) -> list[int]:
    try:
        sizes = [int(part.replace("_", "")) for part in value.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r}: a comma-separated list of car counts, e.g. 1000,5000") from None
    if not sizes or any(s < 1 or s > 20000 for s in sizes):
        raise click.BadParameter(f"{value!r}: each size must be between 1 and 20,000 cars")
    return sizes


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--sizes", default="1000,5000,10000", show_default=True, help="Fleet sizes to run, comma-separated.")
@click.option("--quick", is_flag=True, help="A smoke run: 200 cars, short windows (about a minute).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also save every figure to this JSON file.")
@click.option("--max-handshakes", type=click.IntRange(1, 512), default=32, show_default=True,
              help="TLS handshakes the fleet runs at once (its connect-rate bound).")
@click.option("--window", "cpu_window_s", type=click.FloatRange(1, 600), default=30.0, show_default=True,
              help="Seconds over which steady-state CPU is measured.")
@click.option("--rate", "command_rate", type=click.FloatRange(1, 1000), default=50.0, show_default=True,
              help="Commands per second (driver and app round trips).")
@click.option("--commands", type=click.IntRange(1, 100_000), default=1000, show_default=True,
              help="Commands per round-trip measurement.")
@click.option("--app-users", type=click.IntRange(0, 500), default=60, show_default=True,
              help="App users (one enrolled car each) for the app round trip; 0 skips it.")
@click.option("--outage", "outage_s", type=click.FloatRange(0, 120), default=5.0, show_default=True,
              help="Seconds the broker stays down in the reconnect storm.")
@click.option("--no-storm", is_flag=True, help="Skip the reconnect storm.")
@click.option("--no-p3", is_flag=True, help="Skip the status-throughput figure.")
@click.option("--fleet-env", multiple=True, metavar="NAME=VALUE",
              help="Extra environment for the fleet process (experiments, e.g. MALLOC_ARENA_MAX=2).")
@click.option("--broker-nodelay/--no-broker-nodelay", default=False, show_default=True,
              help="Add `set_tcp_nodelay true` to the generated Mosquitto configuration.")
@click.option("--py-spy", "profile_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Record py-spy profiles of the fleet and cloud processes into this directory.")
@click.option("--keep", is_flag=True, help="Keep the temporary directory (state, broker logs) and print it.")
@click.option("--log-level", default="WARNING", show_default=True, help="The bench's own log level.")
@click.option("--p6", is_flag=True, help="Only P6: 3 fleet shards against a 3-node NATS cluster (docs/scale-out.md).")
@click.option("--p6-cars", type=click.IntRange(3, 200_000), default=50_000, show_default=True,
              help="Cars of the P6 run (the target is 50,000; a few hundred prove the set-up).")
def main(
    sizes: str, quick: bool, json_path: Path | None, max_handshakes: int, cpu_window_s: float, command_rate: float,
    commands: int, app_users: int, outage_s: float, no_storm: bool, no_p3: bool, fleet_env: tuple[str, ...],
    broker_nodelay: bool, profile_dir: Path | None, keep: bool, log_level: str, p6: bool, p6_cars: int,
) -> None:
    """Run the fleet at each size against a local Mosquitto (TLS, ACLs) and print connect time, steady-state
    CPU and RSS of the fleet process, command round trips (driver and app), the reconnect storm and the
    cloud's status throughput, each beside its SPEC §6 target."""
    configure_logging(log_level)
    if p6:
        _main_p6(p6_cars, json_path, cpu_window_s, max_handshakes, keep)
        return
    env: dict[str, str] = {}
    for item in fleet_env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{item!r}: expected NAME=VALUE", param_hint="--fleet-env")
        env[name] = value
    options = BenchOptions(
        sizes=_sizes(sizes), max_handshakes=max_handshakes, cpu_window_s=cpu_window_s, command_rate=command_rate,
        commands=commands, app_users=app_users, app_commands=commands, outage_s=outage_s, app=app_users > 0,
        storm=not no_storm, p3=not no_p3, keep=keep, fleet_env=env, broker_nodelay=broker_nodelay,
        profile_dir=profile_dir,
        progress=lambda line: click.echo(f"bench: {line}", err=True),
    )
    if quick:
        options.sizes = [200]
        options.settle_s = 2.0
        options.cpu_window_s = min(cpu_window_s, 5.0)
        options.commands = options.app_commands = min(commands, 100)
        options.app_users = min(app_users, 10)
        options.outage_s = min(outage_s, 2.0)
        options.p3_cars, options.p3_per_car = 200, 10
    command = "python -m tcu_sim.bench " + shlex.join(sys.argv[1:])
    report = asyncio.run(_until_signal(run_bench(options, command)))
    if report is None:
        click.echo("bench: interrupted; child processes stopped, temporary files removed", err=True)
        sys.exit(130)
    click.echo(render_table(report))
    if json_path is not None:
        report.write_json(json_path)
        click.echo(f"figures saved to {json_path}")
        from tcu_sim.bench._plot import save_bench_plot  # matplotlib only when figures are saved

        click.echo(f"curves drawn in {save_bench_plot(json_path, report.as_dict())}")
    if report.errors:
        sys.exit(1)


def _main_p6(cars: int, json_path: Path | None, window_s: float, max_handshakes: int, keep: bool) -> None:
    from tcu_sim.bench._p6 import run_p6

    command = "python -m tcu_sim.bench " + shlex.join(sys.argv[1:])
    report = asyncio.run(
        run_p6(cars, command=command, window_s=window_s, max_handshakes=max_handshakes, keep=keep,
               progress=lambda line: click.echo(f"bench: {line}", err=True))
    )
    click.echo(report.render())
    if json_path is not None:
        report.write_json(json_path)
        click.echo(f"figures saved to {json_path}")
    if report.stopped_by:
        sys.exit(1)


async def _until_signal(run: Coroutine[Any, Any, BenchReport]) -> BenchReport | None:
    """Run the bench; Ctrl-C or SIGTERM cancel it, so that every context (broker, fleet, cloud, temporary
    directory) is left in order. None when it was interrupted."""
    task = asyncio.ensure_future(run)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        return None
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


if __name__ == "__main__":
    main()
