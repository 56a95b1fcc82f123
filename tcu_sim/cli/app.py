"""`tcu-sim app ...`: what a phone app does, from the command line (over `AppClient`).

    tcu-sim app --broker mqtts://localhost:8884 --username app-1 register alice@example.com
    tcu-sim app --broker mqtts://localhost:8884 --username app-1 login alice@example.com   # session file, 0600
    tcu-sim app mailbox                          # the verification link
    tcu-sim app verify CODE
    tcu-sim app add-vehicle VSS... --accept-terms
    tcu-sim app lock VSS...                      # asks for the S-PIN, waits for the car

`login` keeps the session token, with the broker, the MQTT username and (if given) the MQTT password, in
`$XDG_CONFIG_HOME/tcu-sim/session.json` (or `--session FILE`), readable only by you; later commands read their
connection settings from it. Until that file exists, the one `tcu-sim up` writes (`<state>/app-session.json`,
naming its app listener and a login) is used, so a second terminal next to `make run` needs no options; that
file's `pool` of logins lets several `tcu-sim app` processes run at once, each leasing a login (= client id) of
its own. Passwords and S-PINs are asked for without echo (piped: one line of stdin each; or read from the
environment: `TCU_SIM_APP_<COMMAND>_PASSWORD`, ...), never printed. A refusal prints the cloud's error code and
message and exits 1; a broker or cloud that does not answer exits 3.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from tcu_sim.app import (
    AppClient,
    AppRequestError,
    AppTimeout,
    AppTransportError,
    AuthenticationRequired,
    CommandInfo,
    RateLimited,
    SpinIncorrect,
    SpinLocked,
)
from tcu_sim.cli._broker_url import parse_broker_url, stack_app_url, tls_context
from tcu_sim.protocol import CommandOp, CommandState

__all__ = ["SessionFile", "app", "default_session_path"]

T = TypeVar("T")

_APP_PORT = 8884
_TRANSPORT_EXIT = 3


def default_session_path() -> Path:
    """`$XDG_CONFIG_HOME/tcu-sim/session.json` (`~/.config/...` by default)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "tcu-sim" / "session.json"


def _session_path(state_dir: Path) -> Path:
    """Your own session file once it exists; before that, the one `tcu-sim up` wrote into the state directory
    (it names the app listener and a login for it), so that a second terminal needs no options."""
    own = default_session_path()
    stack = state_dir / "app-session.json"
    return stack if not own.exists() and stack.is_file() else own


@dataclass
class SessionFile:
    """What `login` keeps between commands: where to connect, as whom, and the session token."""

    path: Path
    data: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def read(cls, path: Path) -> SessionFile:
        """The session file at `path` (empty when it does not exist)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls(path)
        except (OSError, ValueError) as exc:
            raise click.ClickException(f"{path}: unreadable session file: {exc}") from None
        if not isinstance(data, dict):
            raise click.ClickException(f"{path}: unreadable session file: not a JSON object")
        return cls(path, data)

    def get(self, key: str) -> str | None:
        value = self.data.get(key)
        return value if isinstance(value, str) else None

    def write(self) -> None:
        """Write it readable by the owner only (0600, in a 0700 directory when it creates one)."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(self.data, file, indent=2)
        os.chmod(tmp, 0o600)  # an existing file keeps its mode through O_CREAT; make sure
        os.replace(tmp, self.path)


@dataclass
class _Options:
    broker: str | None
    username: str | None
    mqtt_password: str | None = field(repr=False)
    ca: Path | None
    state_dir: Path
    insecure: bool
    timeout: float
    session: SessionFile

    def client(self) -> AppClient:
        url = (self.broker or self.session.get("broker") or stack_app_url(self.state_dir)
               or f"mqtts://localhost:{_APP_PORT}")
        broker = parse_broker_url(url, default_port=_APP_PORT)
        username = self.username or broker.username or self.session.get("username")
        if not username:
            raise click.UsageError("no MQTT username: give --username (your app's client id) or log in first")
        password = self.mqtt_password or broker.password or self.session.get("mqtt_password")
        if not (self.username or broker.username):
            username, password = self._lease(username, password)
        context = None
        if broker.tls:
            ca = self.ca or (self.state_dir / "pki" / "ca.crt")
            context = tls_context(ca=ca if ca.is_file() else None, insecure=self.insecure)
        client = AppClient(
            broker.host, broker.port, username, password, context, token=self.session.get("token"),
            timeout=self.timeout,
        )
        self.session.data.setdefault("broker", str(broker))
        self.session.data.setdefault("username", username)
        return client


    def _lease(self, username: str, password: str | None) -> tuple[str, str | None]:
        """A login of the session's `pool` that no other `tcu-sim app` process holds, for as long as this command
        runs (an exclusive `flock` beside the session file, dropped by the kernel when the process ends). The
        app listener makes the client id the username, so two processes on one login would push each other off.
        Without a pool (your own login), the session's login."""
        pool = self.session.data.get("pool")
        if not isinstance(pool, dict) or username not in pool:
            return username, password
        names = [username, *(name for name in pool if name != username)]
        leases = self.session.path.parent / "app-leases"
        leases.mkdir(mode=0o700, exist_ok=True)
        ctx = click.get_current_context()
        for name in names:
            fd = os.open(leases / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            ctx.call_on_close(lambda fd=fd: os.close(fd))  # closing the descriptor releases the lock
            secret = pool[name]
            return name, secret if isinstance(secret, str) else None
        raise click.ClickException(
            f"all {len(names)} app logins of {self.session.path} are in use by other `tcu-sim app` processes: "
            "wait for one to end, or give a login of your own with --username and --mqtt-password"
        )


def _opts() -> _Options:
    obj = click.get_current_context().find_object(_Options)
    assert obj is not None  # the group callback always stores it
    return obj


class _Refused(click.ClickException):
    exit_code = 1


class _Unreachable(click.ClickException):
    exit_code = _TRANSPORT_EXIT


def _explain(exc: AppRequestError) -> str:
    """The cloud's code and message, the figure it carries when the message does not say it already, and what to
    do next."""
    text = f"{exc.code.value}: {exc.message}"
    if isinstance(exc, SpinIncorrect):
        if str(exc.remaining_tries) not in exc.message:
            text += f" ({exc.remaining_tries} tries left)"
        text += " — check the S-PIN (a fleet-file user's is its `spin`); after the last try it locks"
    elif isinstance(exc, SpinLocked):
        if str(exc.locked_seconds) not in exc.message:
            text += f" (locked for {exc.locked_seconds} s)"
        text += f" — wait {exc.locked_seconds} s, then try again"
    elif isinstance(exc, RateLimited):
        text += f" — retry after {exc.retry_after_s:g} s"
    elif isinstance(exc, AuthenticationRequired):
        text += " — log in with: tcu-sim app login EMAIL"
    return text


def _run(job: Callable[[AppClient], Awaitable[T]]) -> T:
    """Connect, run `job`, disconnect; cloud refusals and transport failures become clean CLI errors."""
    opts = _opts()

    async def main() -> T:
        async with opts.client() as client:
            return await job(client)

    try:
        return asyncio.run(main())
    except AppRequestError as exc:
        raise _Refused(_explain(exc)) from None
    except AppTransportError as exc:
        raise _Unreachable(str(exc)) from None


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# -- the group ------------------------------------------------------------------------------------------------
@click.group("app")
@click.option("--broker", default=None, help=f"mqtts://HOST:PORT of the app listener (default: the session's, else "
              f"the one of the stack running on --state, else mqtts://localhost:{_APP_PORT}).")
@click.option("--username", default=None, help="MQTT username = client id of this app (default: the session's).")
@click.option("--mqtt-password", default=None, envvar="TCU_SIM_APP_MQTT_PASSWORD",
              help="MQTT password of the app login (or TCU_SIM_APP_MQTT_PASSWORD).")
@click.option("--ca", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="CA certificate of the broker (default: <state>/pki/ca.crt, else the system's).")
@click.option("--state", "state_dir", type=click.Path(file_okay=False, path_type=Path), default=Path(".tcu-sim/demo"),
              show_default=True, help="State directory (for the fleet CA).")
@click.option("--insecure", is_flag=True, help="Do not verify the broker's certificate (a local test only).")
@click.option("--session", "session_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Session file (default: $XDG_CONFIG_HOME/tcu-sim/session.json, or <state>/app-session.json "
              "written by `tcu-sim up` while the former does not exist).")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Seconds to wait for each answer.")
@click.pass_context
def app(
    ctx: click.Context,
    broker: str | None,
    username: str | None,
    mqtt_password: str | None,
    ca: Path | None,
    state_dir: Path,
    insecure: bool,
    session_path: Path | None,
    timeout: float,
) -> None:
    """Use the cloud as an app does: account, garage, remote commands, licences."""
    session = SessionFile.read(session_path or _session_path(state_dir))
    ctx.obj = _Options(broker, username, mqtt_password, ca, state_dir, insecure, timeout, session)


def _secret(name: str, prompt: str, *, confirm: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def ask(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
        if value is not None:
            return value
        if not sys.stdin.isatty():
            # Piped (a script): one line per secret, no confirmation and no getpass (which warns off a terminal).
            line = sys.stdin.readline()
            if not line:
                raise click.UsageError(f"no {prompt} on standard input: pipe one line per secret, or give --{name}")
            return line.rstrip("\r\n")
        answer: str = click.prompt(prompt, hide_input=True, confirmation_prompt=confirm)
        return answer

    return click.option(f"--{name}", default=None, callback=ask, expose_value=True,
                        help=f"{prompt} (asked for when not given, never echoed; piped: read as one line of "
                             "standard input).")


# -- account ---------------------------------------------------------------------------------------------------
@app.command("register")
@click.argument("email")
@_secret("password", "Password", confirm=True)
@_secret("spin", "S-PIN (4 digits)", confirm=True)
def register_command(email: str, password: str, spin: str) -> None:
    """Create a CUPRA ID; the verification link arrives in the mailbox (tcu-sim app mailbox after login)."""
    _run(lambda c: c.register(email, password, spin))
    click.echo(f"registered {email}: verify the address with the link in the mailbox")


@app.command("verify")
@click.argument("code")
def verify_command(code: str) -> None:
    """Verify the e-mail address with the CODE of the verification link."""
    _run(lambda c: c.verify_email(code))
    click.echo("e-mail address verified")


@app.command("login")
@click.argument("email")
@_secret("password", "Password")
def login_command(email: str, password: str) -> None:
    """Log in and keep the session (token, broker, username) in the session file."""
    opts = _opts()
    info = _run(lambda c: c.login(email, password))
    session = opts.session
    session.data.update({"email": info.email, "token": info.token})
    if opts.mqtt_password:
        session.data["mqtt_password"] = opts.mqtt_password
    if opts.username:
        session.data["username"] = opts.username
    if opts.broker:
        session.data["broker"] = opts.broker
    session.write()
    verified = "" if info.verified else " (e-mail not verified yet)"
    click.echo(f"logged in as {info.email}{verified}; session kept in {session.path}")


@app.command("logout")
def logout_command() -> None:
    """End the session and forget its token."""
    session = _opts().session
    try:
        _run(lambda c: c.logout())
    finally:
        session.data.pop("token", None)
        if session.path.exists():
            session.write()
    click.echo("logged out")


@app.command("change-password")
@_secret("old-password", "Current password")
@_secret("new-password", "New password", confirm=True)
def change_password_command(old_password: str, new_password: str) -> None:
    """Change the password; every other session ends (R17)."""
    ended = _run(lambda c: c.change_password(old_password, new_password))
    click.echo(f"password changed; {ended} other session(s) ended")


@app.command("change-spin")
@_secret("old-spin", "Current S-PIN")
@_secret("new-spin", "New S-PIN", confirm=True)
def change_spin_command(old_spin: str, new_spin: str) -> None:
    """Change the S-PIN (needs a car in the garage, R4)."""
    _run(lambda c: c.change_spin(old_spin, new_spin))
    click.echo("S-PIN changed")


@app.command("reauth-timeout")
@click.argument("minutes", type=click.Choice(["5", "10", "15", "none"]))
def reauth_timeout_command(minutes: str) -> None:
    """Ask for the password again after MINUTES without activity (5, 10, 15, or none)."""
    value = None if minutes == "none" else int(minutes)
    _run(lambda c: c.set_reauth_timeout(value))
    click.echo(f"re-authentication timeout: {minutes}")


@app.command("mailbox")
def mailbox_command() -> None:
    """The simulated e-mails sent to you."""
    mails = _run(lambda c: c.mailbox())
    for m in mails:
        click.echo(f"--- {_when(m.at)}\nSubject: {m.subject}\n\n{m.body}\n")
    if not mails:
        click.echo("(no mail)")


# -- garage ----------------------------------------------------------------------------------------------------
@app.command("add-vehicle")
@click.argument("vin")
@click.option("--accept-terms", is_flag=True, help="Accept the terms and conditions of CUPRA CONNECT.")
def add_vehicle_command(vin: str, accept_terms: bool) -> None:
    """Add the car VIN to your garage; then finish in the car (two keys, or the pairing code shown here)."""
    added = _run(lambda c: c.add_vehicle(vin, accept_terms=accept_terms))
    if added.method == "pairing_code":
        click.echo(f"{added.vin}: enter the pairing code {added.pairing_code} in the car's infotainment "
                   f"(Settings > Online Services > Register) before {_when(added.expires_at)}")
    else:
        click.echo(f"{added.vin}: complete the Two Key Owner Verification in the car, with both keys")


@app.command("remove-vehicle")
@click.argument("vin")
def remove_vehicle_command(vin: str) -> None:
    """Remove the car VIN from your garage."""
    _run(lambda c: c.remove_vehicle(vin))
    click.echo(f"{vin}: removed")


@app.command("vehicles")
@click.option("--json", "as_json", is_flag=True, help="Print the garage as JSON.")
def vehicles_command(as_json: bool) -> None:
    """Your garage."""
    vehicles = _run(lambda c: c.list_vehicles())
    if as_json:
        click.echo(json.dumps(vehicles, indent=2, sort_keys=True))
        return
    if not vehicles:
        click.echo("(your garage is empty: add a car with `tcu-sim app add-vehicle VIN`)")
        return
    click.echo(f"{'VIN':<17}  {'model':<10} {'equipment':<13} {'role':<9} state")
    for v in vehicles:
        click.echo(f"{v.get('vin')}  {v.get('model', ''):<10} {v.get('equipment', ''):<13} "
                   f"{v.get('role', ''):<9} {v.get('state', '')}")


@app.command("status")
@click.argument("vin")
@click.option("--json", "as_json", is_flag=True, help="Print the whole status as JSON.")
def status_command(vin: str, as_json: bool) -> None:
    """What the cloud last heard from the car VIN."""
    result = _run(lambda c: c.vehicle_status(vin))
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True))
        return
    status = result.get("status") or {}
    online = {True: "online", False: "offline"}.get(result.get("online") is True, "unknown")
    if result.get("online") is None:
        online = "unknown"
    privacy = result.get("privacy_mode") or "-"
    click.echo(f"{vin}: {online}, privacy {privacy}, updated {_when(result.get('updated_at'))}")
    if status:
        heater = status.get("aux_heating", {})
        position = status.get("parking_position")
        where = f"{position['lat']:.5f}, {position['lon']:.5f}" if position else "-"
        locked = {True: "locked", False: "unlocked"}.get(status.get("locked") is True, "lock state unknown")
        if status.get("locked") is None:
            locked = "lock state unknown"
        click.echo(f"  {locked}, ignition {status.get('ignition')}, moving {status.get('moving')}")
        click.echo(f"  doors: {_opened(status.get('doors'), lambda d: isinstance(d, dict) and d.get('open') is True)}; "
                   f"windows: {_opened(status.get('windows'), lambda w: w == 'open')}")
        click.echo(f"  heater {heater.get('state')} ({heater.get('remaining_min')} min left), parked at {where}")
        click.echo(f"  fuel {status.get('fuel_level_pct')} %, range {status.get('range_km')} km, "
                   f"12 V battery {status.get('battery_12v_v')} V, odometer {status.get('odometer_km')} km")


def _opened(parts: object, is_open: Callable[[Any], bool]) -> str:
    """`all closed`, or `open: front_left, trunk` (doors or windows of a status; `-` when it has none)."""
    if not isinstance(parts, dict) or not parts:
        return "-"
    opened = [name for name, state in parts.items() if is_open(state)]
    return f"open: {', '.join(opened)}" if opened else "all closed"


@app.command("invite")
@click.argument("vin")
@click.argument("email")
def invite_command(vin: str, email: str) -> None:
    """Nominate EMAIL as a secondary user of the car VIN (primary user only)."""
    _run(lambda c: c.invite_secondary(vin, email))
    click.echo(f"{vin}: {email} invited")


@app.command("remove-secondary")
@click.argument("vin")
@click.argument("email")
def remove_secondary_command(vin: str, email: str) -> None:
    """Remove the secondary user EMAIL from the car VIN."""
    _run(lambda c: c.remove_secondary(vin, email))
    click.echo(f"{vin}: {email} removed")


# -- commands --------------------------------------------------------------------------------------------------
def _command_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--wait/--no-wait", default=True, show_default=True,
                     help="Wait for the car's answer (--no-wait: return once the cloud took the command).")(f)
    f = click.option("--wait-timeout", type=click.FloatRange(min=0.1), default=90.0, show_default=True,
                     help="Seconds to wait for the final state.")(f)
    return f


def _send(vin: str, op: CommandOp, params: dict[str, Any], spin: str | None, wait: bool, wait_timeout: float) -> None:
    """Send one command, print its progress, and fail unless it succeeded (when waiting)."""

    async def job(client: AppClient) -> CommandInfo | str:
        command_id = await client.command(vin, op, params, spin)
        click.echo(f"{op.value} {vin}: command {command_id} sent")
        if not wait:
            click.echo(f"not waiting (--no-wait); follow it with: tcu-sim app command-status {command_id}", err=True)
            return command_id
        click.echo(await _waiting_for(client, vin, command_id, wait_timeout), err=True)
        try:
            state = await client.wait_command(command_id, timeout=wait_timeout)
        except AppTimeout:
            raise _Unreachable(
                f"command {command_id} not finished within {wait_timeout:g} s; it may still run: "
                f"tcu-sim app command-status {command_id}"
            ) from None
        info = client.known_state(command_id)
        return info if info is not None else CommandInfo(command_id=command_id, state=state)

    outcome = _run(job)
    if isinstance(outcome, str):
        return
    reason = f" ({outcome.reason})" if outcome.reason else ""
    if outcome.state is not CommandState.SUCCEEDED:
        raise _Refused(f"command {outcome.command_id} {outcome.state.value}{reason}")
    click.echo(f"command {outcome.command_id} succeeded")


async def _waiting_for(client: AppClient, vin: str, command_id: str, wait_timeout: float) -> str:
    """What the command now waits for, in one line: the car's answer, or an offline car coming back."""
    info = await client.command_status(command_id)
    if info.state.is_final:
        return f"command {command_id} {info.state.value}"
    budget = wait_timeout
    if info.expires_at is not None and info.created_at is not None:
        budget = min(budget, max(0.0, info.expires_at - info.created_at))  # the command's time to live
    status = await client.vehicle_status(vin)
    if status.get("online") is False:
        return (f"car offline — waiting up to {budget:.0f} s for it to come back (the command waits for it in the "
                f"car's session; --no-wait returns at once)")
    return f"waiting up to {budget:.0f} s for the car's answer"


def _spin_command(name: str, op: CommandOp, doc: str) -> None:
    @app.command(name, help=doc)
    @click.argument("vin")
    @_secret("spin", "S-PIN")
    @_command_options
    def command(vin: str, spin: str, wait: bool, wait_timeout: float) -> None:
        _send(vin, op, {}, spin, wait, wait_timeout)


_spin_command("lock", CommandOp.LOCK, "Lock the car VIN (S-PIN).")
_spin_command("unlock", CommandOp.UNLOCK, "Unlock the car VIN (S-PIN).")


@app.command("honk")
@click.argument("vin")
@click.option("--flash-only", is_flag=True, help="Only flash the lights.")
@click.option("--duration", type=click.IntRange(1, 30), default=10, show_default=True, help="Seconds.")
@_command_options
def honk_command(vin: str, flash_only: bool, duration: int, wait: bool, wait_timeout: float) -> None:
    """Honk and flash (or only flash) the car VIN."""
    params = {"mode": "flash" if flash_only else "honk_and_flash", "duration_s": duration}
    _send(vin, CommandOp.HONK_AND_FLASH, params, None, wait, wait_timeout)


@app.command("refresh")
@click.argument("vin")
@_command_options
def refresh_command(vin: str, wait: bool, wait_timeout: float) -> None:
    """Wake the car VIN so it sends a fresh status."""
    _send(vin, CommandOp.STATUS_REFRESH, {}, None, wait, wait_timeout)


@app.group("heater")
def heater() -> None:
    """The auxiliary heater."""


@heater.command("start")
@click.argument("vin")
@click.option("--duration", type=click.IntRange(10, 60), default=30, show_default=True, help="Minutes.")
@click.option("--temperature", type=click.FloatRange(16, 29.5), default=22.0, show_default=True, help="°C, 0.5 steps.")
@_secret("spin", "S-PIN")
@_command_options
def heater_start(vin: str, duration: int, temperature: float, spin: str, wait: bool, wait_timeout: float) -> None:
    """Start the auxiliary heater of the car VIN (S-PIN)."""
    params = {"duration_min": duration, "target_temperature_c": temperature}
    _send(vin, CommandOp.AUX_HEATING_START, params, spin, wait, wait_timeout)


@heater.command("stop")
@click.argument("vin")
@_command_options
def heater_stop(vin: str, wait: bool, wait_timeout: float) -> None:
    """Stop the auxiliary heater of the car VIN."""
    _send(vin, CommandOp.AUX_HEATING_STOP, {}, None, wait, wait_timeout)


@app.group("ventilation")
def ventilation() -> None:
    """The remote ventilation."""


@ventilation.command("start")
@click.argument("vin")
@click.option("--duration", type=click.IntRange(10, 60), default=30, show_default=True, help="Minutes.")
@_secret("spin", "S-PIN")
@_command_options
def ventilation_start(vin: str, duration: int, spin: str, wait: bool, wait_timeout: float) -> None:
    """Start the ventilation of the car VIN (S-PIN)."""
    _send(vin, CommandOp.VENTILATION_START, {"duration_min": duration}, spin, wait, wait_timeout)


@ventilation.command("stop")
@click.argument("vin")
@_command_options
def ventilation_stop(vin: str, wait: bool, wait_timeout: float) -> None:
    """Stop the ventilation of the car VIN."""
    _send(vin, CommandOp.VENTILATION_STOP, {}, None, wait, wait_timeout)


@app.command("command-status")
@click.argument("command_id")
def command_status_command(command_id: str) -> None:
    """Where the command COMMAND_ID is in its lifecycle."""
    info = _run(lambda c: c.command_status(command_id))
    reason = f" ({info.reason})" if info.reason else ""
    click.echo(f"{info.command_id}: {info.op} {info.vin}: {info.state.value}{reason}, "
               f"created {_when(info.created_at)}, expires {_when(info.expires_at)}")


# -- licences --------------------------------------------------------------------------------------------------
@app.group("licence")
def licence() -> None:
    """The car's CUPRA CONNECT licence."""


def _print_licence(result: dict[str, Any]) -> None:
    valid = "valid" if result.get("valid") else f"not valid ({result.get('problem')})"
    click.echo(f"{result.get('vin')}: {valid}, from {_when(result.get('starts_at'))} to {_when(result.get('ends_at'))}")
    for p in result.get("purchases") or []:
        refunded = ", refunded" if p.get("refunded") else ""
        click.echo(f"  purchase of {p.get('years')} year(s) on {_when(p.get('activated_at'))}{refunded}")


@licence.command("status")
@click.argument("vin")
def licence_status(vin: str) -> None:
    """The licence of the car VIN."""
    _print_licence(_run(lambda c: c.licence_status(vin)))


@licence.command("renew")
@click.argument("vin")
@click.option("--years", type=click.IntRange(1, 5), default=1, show_default=True)
def licence_renew(vin: str, years: int) -> None:
    """Buy YEARS more for the car VIN (primary user)."""
    _print_licence(_run(lambda c: c.licence_renew(vin, years)))


@licence.command("cancel")
@click.argument("vin")
def licence_cancel(vin: str) -> None:
    """Cancel the last purchase for the car VIN within 14 days (refund)."""
    _print_licence(_run(lambda c: c.licence_cancel(vin)))

