"""The `tcu-sim` command line. Each command group lives in its own module and is registered here."""

from __future__ import annotations

import importlib

import click

from tcu_sim._version import __version__
from tcu_sim.cli._examples import add_examples
from tcu_sim.logging import configure_logging

__all__ = ["cli", "main"]

# (module, attribute) of each command group; a module owns one group and its subcommands.
_COMMANDS: list[tuple[str, str]] = [
    ("tcu_sim.cli.car", "car"),
    ("tcu_sim.cli.fleet", "fleet"),
    ("tcu_sim.cli.pki", "pki"),
    ("tcu_sim.cli.broker", "broker"),
    ("tcu_sim.cli.cloud", "cloud"),
    ("tcu_sim.cli.app", "app"),
    ("tcu_sim.cli.fault", "fault"),
    ("tcu_sim.cli.scenario", "scenario"),
    ("tcu_sim.cli.up", "up"),
    ("tcu_sim.cli.asyncapi", "asyncapi"),
    ("tcu_sim.cli.record", "record"),
    ("tcu_sim.cli.record", "replay_command"),
]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tcu-sim")
@click.option("--log-level", default="INFO", show_default=True, help="DEBUG, INFO, WARNING or ERROR.")
@click.option("--log-json/--log-console", default=None, help="Log format (default: JSON unless on a terminal).")
def cli(log_level: str, log_json: bool | None) -> None:
    """A fleet of simulated connected cars and the cloud they talk to over MQTT."""
    configure_logging(log_level, json=log_json)


for _module, _attr in _COMMANDS:
    cli.add_command(getattr(importlib.import_module(_module), _attr))
add_examples(cli)  # every verb's --help shows an example (tcu_sim/cli/_examples.py)


def main() -> None:
    """Console-script entry point."""
    cli(auto_envvar_prefix="TCU_SIM")
