"""`tcu-sim fleet ...`: check a fleet file, print its JSON Schema, provision keys (the runner adds `run`)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from tcu_sim.clock import SystemClock
from tcu_sim.fleet import (
    FleetConfig,
    FleetConfigError,
    FleetError,
    Shard,
    expand_fleet,
    fleet_schema_json,
    load_fleet,
    parse_shard,
    provision,
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
