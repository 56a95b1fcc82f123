"""`tcu-sim up [FLEET.yaml]`: the whole thing on this machine — broker, cloud, fleet, users — with a live view.

    tcu-sim up                                   # fleet_configs/demo.yaml, Mosquitto if installed, else amqtt
    tcu-sim up fleet_configs/city-1k.yaml --time-scale 60
    tcu-sim up --broker mqtts://broker.example:8883 --app-broker mqtts://app-1:PASSWORD@broker.example:8884
    tcu-sim up --no-view --duration 30           # plain lines for 30 s, then stop (CI smoke test)
    tcu-sim up --record run.jsonl.gz             # and record the traffic (tcu-sim replay run.jsonl.gz)

State (keys, certificates, the broker's persistence, the cloud's registry, the app login) lives in
`.tcu-sim/<fleet name>` and is kept for the next run; the structured log goes to `<state>/up.log`. Ctrl-C or
SIGTERM stops fleet, cloud and broker in that order and exits 0.

One stack per state directory: `up` holds `<state>/.lock` while it runs, and a second `up` (or `fleet run`,
`cloud run`) on the same directory exits 2 before it writes anything, naming the holder's pid. While it runs,
`<state>/endpoints.json` says where its broker listens (`tcu-sim car`, `fault` and `app` read it).

The demo users' passwords and S-PINs are printed only when stdout is a terminal; otherwise (a CI log) the login
instructions say where to find them in the fleet file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import click
import structlog

from tcu_sim.cli._http import HttpChoice, http_choice, http_options, start_dashboard
from tcu_sim.cli._metrics import metrics_option, serve_metrics
from tcu_sim.cli._state import StateInUse, hold_state
from tcu_sim.cli.fleet import load_fleet_or_fail
from tcu_sim.fleet import FleetConfig, StateLock, UserRole
from tcu_sim.logging import configure_logging, redact_secrets
from tcu_sim.record import record_stack
from tcu_sim.stack import (
    TERMINAL_APP,
    BrokerChoice,
    EnrolmentOutcome,
    LiveView,
    LocalStack,
    LoginHelp,
    PlainView,
    StackBusy,
    StackConfig,
    StackError,
    login_instructions,
)

__all__ = ["up"]

_DEFAULT_FLEET = Path("fleet_configs/demo.yaml")


def _shown(path: Path) -> str:
    """`path` relative to the working directory when it is inside it (what a user types), else absolute."""
    absolute = path.absolute()
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)


def _program() -> str:
    """How to call tcu-sim from another terminal: `tcu-sim` when that is on PATH and this one, else its path."""
    me = Path(sys.argv[0])
    found = shutil.which("tcu-sim")
    if found is not None and me.name == "tcu-sim" and Path(found).resolve() == me.resolve():
        return "tcu-sim"
    if me.name == "tcu-sim" and me.exists():
        return _shown(me)
    return "tcu-sim"


@contextlib.contextmanager
def _log_to_file(path: Path, level: str) -> Iterator[None]:
    """Send structlog and stdlib logging (amqtt, aiosqlite, ...) to `path` as JSON lines while `up` runs: the
    terminal belongs to the live view."""
    path.parent.mkdir(parents=True, exist_ok=True)
    numeric = logging.getLevelName(level.upper())
    with path.open("a", encoding="utf-8") as file:
        structlog.configure(
            processors=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                redact_secrets,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(),
            ],
            wrapper_class=structlog.make_filtering_bound_logger(numeric),
            logger_factory=structlog.PrintLoggerFactory(file=file),
            cache_logger_on_first_use=False,
        )
        root = logging.getLogger()
        saved = root.handlers[:], root.level
        handler = logging.StreamHandler(file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        root.handlers = [handler]
        root.setLevel(numeric)
        try:
            yield
        finally:
            root.handlers = saved[0]
            configure_logging(level)


def _root_log_level() -> str:
    ctx = click.get_current_context(silent=True)
    level = ctx.find_root().params.get("log_level") if ctx is not None else None
    return level if isinstance(level, str) else "INFO"


@click.command("up")
@click.argument("fleet_file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--broker", "broker_url", default=None,
              help="Use this existing broker instead of starting one: mqtts://HOST:PORT (mutual TLS with the "
                   "state's fleet PKI) or mqtt://HOST:PORT.")
@click.option("--app-broker", "app_broker_url", default=None,
              help="With --broker: where apps connect, with their login (mqtts://USER:PASSWORD@HOST:PORT). "
                   "Default for an mqtt:// broker: the same URL.")
@click.option("--state", "state_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="State directory (default .tcu-sim/<fleet name>); created and provisioned when missing.")
@click.option("--embedded", is_flag=True, help="Run the embedded amqtt broker even when Mosquitto is installed.")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="Device listener port of the started broker; the app listener gets PORT+1 (0: free ports). "
                   "[default: 8883, or free ports when 8883/8884 are busy]")
@click.option("--no-view", is_flag=True, help="Plain log lines instead of the live view (the default off a terminal).")
@click.option("--time-scale", type=click.FloatRange(min=0.001), default=1.0, show_default=True,
              help="Simulated seconds per real second (cars and cloud).")
@click.option("--duration", type=click.FloatRange(min=0), default=None,
              help="Stop after this many seconds (a smoke test); default: run until Ctrl-C.")
@click.option("--no-users", is_flag=True, help="Do not create the fleet file's users or enrol their cars.")
@click.option("--no-fault-proxy", is_flag=True,
              help="Cars connect straight to the broker (no fleet transport faults: latency, black hole, ...).")
@click.option("--record", "record_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Record every message on the car, app and control topics to this file (gzip JSON Lines, "
                   "secrets redacted) from the moment the stack is up; see `tcu-sim replay`.")
@metrics_option
@http_options
def up(
    fleet_file: Path | None,
    broker_url: str | None,
    app_broker_url: str | None,
    state_dir: Path | None,
    embedded: bool,
    port: int | None,
    no_view: bool,
    time_scale: float,
    duration: float | None,
    no_users: bool,
    no_fault_proxy: bool,
    record_path: Path | None,
    metrics_port: int | None,
    http_port: int,
    no_http: bool,
    http_host: str,
    operator_token: str | None,
) -> None:
    """Start broker, cloud and the fleet of FLEET_FILE (default fleet_configs/demo.yaml), set up its users, and
    show the fleet live until Ctrl-C. State is kept in .tcu-sim/<fleet name> for the next run."""
    if fleet_file is None:
        if not _DEFAULT_FLEET.is_file():
            raise click.UsageError(f"no FLEET_FILE given and no {_DEFAULT_FLEET} in {Path.cwd()}")
        fleet_file = _DEFAULT_FLEET
    if broker_url is not None and embedded:
        raise click.UsageError("--broker and --embedded exclude each other (--broker starts no broker)")
    if app_broker_url is not None and broker_url is None:
        raise click.UsageError("--app-broker goes with --broker (a started broker has its own app listener)")
    fleet = load_fleet_or_fail(fleet_file)
    state = state_dir if state_dir is not None else Path(".tcu-sim") / fleet.name
    choice = BrokerChoice.EXTERNAL if broker_url else BrokerChoice.EMBEDDED if embedded else BrokerChoice.AUTO
    try:
        config = StackConfig(
            state_dir=state, broker=choice, broker_url=broker_url, app_broker_url=app_broker_url,
            port=8883 if port is None else port, port_fallback=port is None, time_scale=time_scale,
            enrol_users=not no_users, fault_proxy=not no_fault_proxy,
        )
    except ValueError as exc:
        raise click.ClickException(f"{fleet_file}: {exc}") from None
    view = not no_view and sys.stdout.isatty()
    log_path = state / "up.log"
    out = sys.stdout
    http = http_choice(http_port, no_http, http_host, operator_token)
    lock = hold_state(state, "up")  # before anything is written there (the log included)
    try:
        _say(out, f"tcu-sim up: fleet {fleet.name!r} ({fleet.car_count} cars) from {_shown(fleet_file)}, "
                  f"state {_shown(state)}, log {_shown(log_path)}")
        with _log_to_file(log_path, _root_log_level()):
            _run_until_signal(
                _main(fleet, config, view=view, duration=duration, metrics_port=metrics_port, out=out, lock=lock,
                      fleet_file=fleet_file, http=http, record_path=record_path)
            )
    finally:
        lock.release()


def _say(out: TextIO, line: str = "") -> None:
    print(line, file=out, flush=True)


async def _main(
    fleet: FleetConfig, config: StackConfig, *, view: bool, duration: float | None, out: TextIO, lock: StateLock,
    fleet_file: Path, metrics_port: int | None = None, http: HttpChoice | None = None,
    record_path: Path | None = None,
) -> None:
    from rich.console import Console

    _say(out, "starting broker, cloud and fleet …")
    stack = LocalStack(fleet, config, lock=lock)
    started = False
    try:
        metrics = serve_metrics(metrics_port, stack.events, cloud=lambda: stack.cloud.stats,
                                fleet=lambda: stack.fleet.sessions)
        async with metrics, stack:
            started = True
            try:
                hint = _report(stack, fleet, config, out, fleet_file=fleet_file)
                url = await start_dashboard(stack, http) if http is not None else None
                if url is not None:
                    _say(out, f"dashboard: {url}/   app API: {url}/api/v1/ (OpenAPI: {url}/openapi.json)")
                _say(out)
                _say(out, "ready — Ctrl-C stops everything (state is kept)"
                          + (f"; stopping by itself after {duration:g} s" if duration is not None else ""))
                runner = LiveView(stack, Console(file=out), hint=hint) if view else PlainView(stack, out)
                recording = (record_stack(stack, record_path, fleet_file=fleet_file) if record_path is not None
                             else contextlib.nullcontext())
                async with recording:
                    if record_path is not None:
                        _say(out, f"recording to {_shown(record_path)} (replay: tcu-sim replay {_shown(record_path)})")
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(duration):
                            await runner.run()
            finally:
                _say(out, "stopping fleet, cloud and broker …")
    except StackBusy as exc:
        raise StateInUse(str(exc)) from None
    except StackError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        if started:
            _say(out, f"stopped; state kept in {_shown(stack.state.root)}")


def _report(stack: LocalStack, fleet: FleetConfig, config: StackConfig, out: TextIO, *, fleet_file: Path) -> str | None:
    """Print what runs where, how fast the fleet came online, the users, and the login instructions; the
    one-line hint for the live view's header."""
    broker, timings = stack.broker, stack.timings
    _say(out, f"broker: {broker.description}")
    _say(out, f"  cars and cloud: {broker.device} (mutual TLS)" if broker.device.tls else
              f"  cars and cloud: {broker.device} (plaintext, no client authentication)")
    for line in broker.limits:
        _say(out, f"  embedded broker limit: {line}")
    for line in broker.notes:
        _say(out, f"  note: {line}")
    _say(out, f"cloud: connected as 'cloud', registry {config.registry_url.split('@')[-1]}")
    online_s = timings.all_online_s or 0.0
    # SPEC P5: the demo fleet is online within 5 s of the broker being ready.
    target = f"{'within' if online_s <= 5 else 'OVER'} the 5 s target, " if fleet.name == "demo" else ""
    held = timings.held_offline
    came = len(stack.cars) - len(held)
    _say(out, f"fleet: {came} cars online {online_s:.2f} s after the broker was ready "
              f"({target}whole start {timings.total_s:.2f} s)"
              + (f"; {len(held)} held offline by their connectivity profile" if held else ""))
    for email in dict.fromkeys(car.email for car in stack.users):
        mine = [c for c in stack.users if c.email == email]
        done = {o: sum(1 for c in mine if c.outcome is o) for o in EnrolmentOutcome}
        role = "secondary" if all(c.role is UserRole.SECONDARY for c in mine) else "primary"
        parts = [f"{n} {o.value}" for o, n in done.items() if n]
        skipped = "; ".join(f"{c.vin}: {c.detail}" for c in mine if c.outcome is EnrolmentOutcome.SKIPPED)
        _say(out, f"user {email}: {len(mine)} cars as {role} ({', '.join(parts)})"
                  + (f" — skipped {skipped}" if skipped else ""))
    terminal = broker.app(TERMINAL_APP)
    users = [u for u in fleet.users if u.role is UserRole.PRIMARY] or list(fleet.users)
    if terminal is None or not users:
        return None
    user = users[0]
    vins = [c.vin for c in stack.users if c.email == user.email and c.outcome is not EnrolmentOutcome.SKIPPED]
    # Secrets only to a person at a terminal: piped or redirected, stdout ends up in CI logs.
    shown = out.isatty()
    help_ = LoginHelp(
        program=_program(), state_dir=_shown(stack.state.root), session_path=_shown(stack.app_session_path),
        app_url=terminal.url, email=user.email, password=user.password.get_secret_value() if shown else None,
        spin=user.spin.get_secret_value() if shown else None, vins=vins,
        secrets_from=f"{_shown(fleet_file)} (users[{fleet.users.index(user)}])",
    )
    _say(out)
    for line in login_instructions(help_):
        _say(out, line)
    return (f"TCU_SIM_APP_SESSION_PATH={help_.session_path} TCU_SIM_APP_STATE_DIR={help_.state_dir} "
            f"{help_.program} app lock {vins[0] if vins else 'VIN'}")


def _run_until_signal(coro: Any) -> None:
    """Run `coro` until it ends, Ctrl-C or SIGTERM; on either signal leave every context in order, exit 0."""

    async def guarded() -> None:
        task = asyncio.current_task()
        assert task is not None  # inside asyncio.run
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await coro

    asyncio.run(guarded())
