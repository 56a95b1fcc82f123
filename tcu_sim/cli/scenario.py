"""`tcu-sim scenario run|validate FILE`: QA scenarios (a fleet file with a timeline of faults, app requests,
attacks and expectations), run against a Mosquitto and a cloud the run starts itself."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
from pathlib import Path

import click
from click.core import ParameterSource

from broker.mosquitto import MosquittoBroker, MosquittoError
from broker.pki import FleetPKI
from tcu_sim.events import CarConnection, CommandChanged, Event, FaultChanged
from tcu_sim.faults import BrokerControl, ProxyMode
from tcu_sim.fleet import FleetConfigError, format_duration
from tcu_sim.logging import configure_logging
from tcu_sim.scenario import Scenario, ScenarioOptions, ScenarioReport, ScenarioRunner, load_scenario

__all__ = ["scenario"]

_EXAMPLES = """\b
Examples:
  tcu-sim scenario validate fleet_configs/scenarios/*.yaml
  tcu-sim scenario run fleet_configs/scenarios/tunnel-commute.yaml --junit tunnel.xml
  tcu-sim scenario run fleet_configs/scenarios/broker-outage.yaml --time-scale 60 --keep
  tcu-sim scenario run fleet_configs/scenarios/tunnel-commute.yaml -v   # and the run's log (INFO) on stderr
"""

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def _load(file: Path) -> Scenario:
    try:
        return load_scenario(file)
    except FleetConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.group("scenario", epilog=_EXAMPLES)
def scenario() -> None:
    """Run QA scenarios: faults, attacks and app actions on a timeline, with expectations and a report."""


@scenario.command("validate")
@click.argument("files", nargs=-1, required=True, type=_FILE)
def validate_command(files: tuple[Path, ...]) -> None:
    """Check scenario FILES (fleet, timeline, fault parameters, expectations) without running them."""
    for file in files:
        loaded = _load(file)
        end = max((p.step.at for p in loaded.plan), default=0.0)
        click.echo(
            f"{file}: scenario {loaded.name!r} ok: {loaded.config.car_count} cars, {len(loaded.plan)} steps "
            f"over {format_duration(end)}, {loaded.expectation_count} expectations"
        )


@scenario.command("run")
@click.argument("file", type=_FILE)
@click.option("--junit", "junit_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write JUnit XML here (one test case per expectation).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the readable report here.")
@click.option("--report-html", "report_html_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write an HTML report with a picture: faults, cars online and command outcomes over time.")
@click.option("--time-scale", type=click.FloatRange(min=1), default=30.0, show_default=True,
              help="Clock seconds per real second.")
@click.option("--proxy", type=click.Choice([m.value for m in ProxyMode]), default="car", show_default=True,
              help="Route each car (or group) through the fault proxy; `none` disables transport faults.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the run keeps its broker, state and registry (default: a temporary directory).")
@click.option("--keep", is_flag=True, help="Keep the work directory afterwards.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the verdict line (and no log at all).")
@click.option("--verbose", "-v", count=True,
              help="Log what the run does to stderr: -v INFO, -vv DEBUG (JSON off a terminal). By default only "
                   "errors are logged; the top-level `tcu-sim --log-level LEVEL scenario run ...` sets it too.")
def run_command(
    file: Path,
    junit_path: Path | None,
    report_path: Path | None,
    report_html_path: Path | None,
    time_scale: float,
    proxy: str,
    workdir: Path | None,
    keep: bool,
    quiet: bool,
    verbose: int,
) -> None:
    """Run the scenario FILE against a Mosquitto and a cloud started for it; exit 1 when an expectation fails.

    While it runs, `tcu-sim fault broker kill --control WORKDIR/broker.sock` reaches its broker.
    """
    _log_level(quiet, verbose)
    loaded = _load(file)
    options = ScenarioOptions(time_scale=time_scale, proxy=ProxyMode(proxy))
    directory = workdir or Path(tempfile.mkdtemp(prefix=f"tcu-sim-{loaded.name}-"))
    directory.mkdir(parents=True, exist_ok=True)
    timeline: list[Event] = []  # what cloud, fleet and faults reported: the picture of --report-html
    try:
        report = asyncio.run(_run(loaded, directory, options, timeline))
    finally:
        if not keep and workdir is None:
            shutil.rmtree(directory, ignore_errors=True)
    text = report.text()
    click.echo(text.splitlines()[0] if quiet else text)
    if report_path is not None:
        report_path.write_text(text, encoding="utf-8")
    if junit_path is not None:
        junit_path.write_text(report.junit_xml(), encoding="utf-8")
    if report_html_path is not None:
        from tcu_sim.scenario import report_html, timeline_png  # matplotlib only when a picture is asked for

        png = timeline_png(timeline, title=f"scenario {loaded.name}", cars=loaded.config.car_count)
        report_html_path.write_text(report_html(report, png), encoding="utf-8")
    if (keep or workdir is not None) and not quiet:
        click.echo(f"work directory: {directory}", err=True)
    if not report.passed:
        raise SystemExit(1)


def _log_level(quiet: bool, verbose: int) -> None:
    """A scenario run reports in its text and JUnit; its log is for digging: errors only unless asked for
    (`-v`, `-vv`, or an explicit top-level `--log-level`), nothing at all with `--quiet`."""
    root = click.get_current_context().find_root()
    explicit = root.get_parameter_source("log_level") not in (None, ParameterSource.DEFAULT)
    if explicit and not quiet:
        return
    level = "CRITICAL" if quiet else ("ERROR", "INFO", "DEBUG")[min(verbose, 2)]
    configure_logging(level, json=root.params.get("log_json"))
    logging.getLogger().setLevel(level)  # the stdlib root was set up by the first configure_logging


async def _run(loaded: Scenario, directory: Path, options: ScenarioOptions, timeline: list[Event]) -> ScenarioReport:
    pki = FleetPKI(directory / "pki")
    pki.ensure_ca()
    pki.ensure_server()
    pki.ensure_cloud()
    pki.ensure_operator()
    broker = MosquittoBroker(directory / "mosquitto", pki, topic_prefix=loaded.config.topic_prefix)
    try:
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(broker)
            runner = ScenarioRunner(loaded, broker, directory / "run", options)
            control = BrokerControl(broker, directory / "broker.sock", events=runner.events, clock=runner.clock)
            await stack.enter_async_context(control)
            with runner.events.subscribe(FaultChanged, CarConnection, CommandChanged, buffer=1_000_000) as seen:
                report = await runner.run()
                timeline.extend(seen.drain())
            return report
    except MosquittoError as exc:
        raise click.ClickException(f"cannot start Mosquitto for the scenario: {exc}".splitlines()[0]) from None
