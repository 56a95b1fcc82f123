"""`tcu-sim fault [CARS...] KIND ...`: inject a fault into running cars, their network, or the broker.

Car and transport faults are published as the `operator` on `sim/{vin}/control` (action `fault`); the car's
fault layer applies them (transport faults on the run's fault-proxy route). With `--toxiproxy`, transport
faults go to a Toxiproxy server instead. `tcu-sim fault broker ...` talks to the control socket of a run that
started its own broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import click

from tcu_sim.cli._broker_url import device_broker_url, parse_broker_url
from tcu_sim.cli._operator import operator_login
from tcu_sim.faults import (
    BROKER_ACTIONS,
    BandwidthFault,
    BlackHoleFault,
    BrokerControlError,
    CarFault,
    ClearFault,
    ClearWhat,
    ClockSkewFault,
    ControlReplies,
    DataLimitFault,
    Direction,
    FaultOperator,
    FlakyFault,
    LatencyFault,
    OfflineFault,
    OnlineFault,
    ResetFault,
    RestartFault,
    Scope,
    SlicerFault,
    ToxiproxyClient,
    ToxiproxyError,
    WeakSignalFault,
    broker_control,
    describe_fault,
    new_control_id,
)
from tcu_sim.fleet import (
    FleetError,
    OutageDistribution,
    StateDir,
    parse_duration,
    parse_selector,
)
from tcu_sim.protocol import ControlResult, Topics, is_valid_vin

__all__ = ["fault"]

_EXAMPLES = """\b
Examples:
  tcu-sim fault VSS... offline --for 30s           the car loses its network for 30 s (last will fires)
  tcu-sim fault VSS... flaky --drop-rate 0.3 --outage 20s
  tcu-sim fault "leon[0:3]" weak --signal 10
  tcu-sim fault VSS... skew 10m                    the car's clock runs 10 minutes ahead
  tcu-sim fault --group city latency 300ms --jitter 50ms
  tcu-sim fault --group city blackhole --for 1m
  tcu-sim fault --toxiproxy http://127.0.0.1:8474 --group city latency 300ms
  tcu-sim fault VSS... clear
  tcu-sim fault broker kill --state .tcu-sim/demo   the broker of the run using this state
"""


def _duration(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _signed_duration(text: str) -> float:
    negative = text.strip().startswith("-")
    seconds = _duration(text.strip().lstrip("+-")) or 0.0
    return -seconds if negative else seconds


def _millis(text: str | None) -> float:
    seconds = _duration(text)
    return 0.0 if seconds is None else seconds * 1000


class _FaultGroup(click.Group):
    """A group whose leading positional arguments are cars (VINs or selectors), before the fault kind."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        cars: list[str] = []
        rest: list[str] = []
        expecting_value = False
        value_options = {"--group", "-g", "--broker", "--state", "--topic-prefix", "--timeout", "--toxiproxy",
                         "--control"}
        for i, arg in enumerate(args):
            if expecting_value:
                rest.append(arg)
                expecting_value = False
            elif arg in self.commands or arg in ("-h", "--help"):
                rest.extend(args[i:])
                break
            elif arg.startswith("-"):
                rest.append(arg)
                expecting_value = arg in value_options
            else:
                cars.append(arg)
        ctx.meta["fault.cars"] = cars
        return super().parse_args(ctx, rest)


@click.group("fault", cls=_FaultGroup, epilog=_EXAMPLES)
@click.option("--group", "-g", "groups", multiple=True, help="Every car of this group (repeatable).")
@click.option("--broker", "broker_url", default=None,
              help="Device listener of the broker (mutual TLS as `operator`). [default: the broker of the stack "
                   "running on --state, else mqtts://127.0.0.1:8883]")
@click.option("--state", "state_dir", type=click.Path(file_okay=False, path_type=Path), default=Path(".tcu-sim/demo"),
              show_default=True, help="State directory: fleet PKI (operator certificate), manifest (groups), "
              "broker control socket.")
@click.option("--topic-prefix", default="", help="Topic prefix of the fleet.")
@click.option("--toxiproxy", "toxiproxy_url", default=None,
              help="Apply transport faults through this Toxiproxy server (http://host:8474) instead of the cars.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True, help="Seconds.")
@click.pass_context
def fault(
    ctx: click.Context,
    groups: tuple[str, ...],
    broker_url: str | None,
    state_dir: Path,
    topic_prefix: str,
    toxiproxy_url: str | None,
    timeout: float,
) -> None:
    """Inject a fault into CARS (VINs or selectors like leon[0:3]) or --group, or into the broker.

    Durations are clock time of the run (`--for 30s`); faults without one last until `clear`.
    """
    ctx.obj = _Target(
        cars=tuple(ctx.meta.get("fault.cars", ())),
        groups=groups,
        broker_url=broker_url,
        state=state_dir,
        topic_prefix=topic_prefix,
        toxiproxy_url=toxiproxy_url,
        timeout=timeout,
    )


class _Target:
    def __init__(
        self,
        *,
        cars: tuple[str, ...],
        groups: tuple[str, ...],
        broker_url: str | None,
        state: Path,
        topic_prefix: str,
        toxiproxy_url: str | None,
        timeout: float,
    ) -> None:
        self.cars = cars
        self.groups = groups
        self.broker_url = broker_url
        self.state = state
        self.topic_prefix = topic_prefix
        self.toxiproxy_url = toxiproxy_url
        self.timeout = timeout

    @property
    def scope(self) -> Scope:
        return Scope.GROUP if self.groups and not self.cars else Scope.CAR

    def vins(self) -> list[str]:
        """The VINs the fault is for (from the state directory's manifest for groups and selectors)."""
        if not self.cars and not self.groups:
            raise click.UsageError("say which cars: VINs, selectors like leon[0:3], or --group NAME")
        selectors = list(self.cars) + list(self.groups)
        if all(is_valid_vin(s) for s in selectors):
            return list(dict.fromkeys(selectors))
        try:
            manifest = StateDir(self.state).load_manifest()
        except FleetError as exc:
            raise click.ClickException(f"{exc} (groups and selectors are resolved from the manifest)") from None
        by_group: dict[str, list[str]] = {}
        for vehicle in manifest.vehicles:
            by_group.setdefault(vehicle.group, []).append(vehicle.vin)
        vins: list[str] = []
        for text in selectors:
            try:
                selector = parse_selector(text)
            except ValueError as exc:
                raise click.BadParameter(str(exc), param_hint="CARS") from None
            if selector.everything:
                found = manifest.vins()
            elif selector.vin is not None:
                found = [selector.vin]
            else:
                members = by_group.get(selector.group or "", [])
                found = [members[i] for i in selector.indices(len(members)) if i < len(members)]
            if not found:
                raise click.BadParameter(f"{text!r} matches no car of {self.state}", param_hint="CARS")
            vins.extend(found)
        return list(dict.fromkeys(vins))

    def routes(self) -> list[str]:
        """Toxiproxy routes: the groups, else the cars."""
        return list(self.groups) if self.groups else self.vins()


def _send(target: _Target, fault_: CarFault) -> None:
    """Publish `fault_` to the target cars as the operator (or, for a transport fault with --toxiproxy, apply it
    on the Toxiproxy routes)."""
    if target.toxiproxy_url is not None:
        _send_toxiproxy(target, fault_)
        return
    vins = target.vins()
    broker = parse_broker_url(device_broker_url(target.broker_url, target.state))
    identifier, tls = "operator-fault-cli", None
    if broker.tls:
        identifier, tls = operator_login(target.state)  # an operator identity of its own: client id = CN

    topics = Topics(target.topic_prefix)
    if fault_.id is None:
        fault_ = fault_.model_copy(update={"id": new_control_id()})
    assert fault_.id is not None  # just given
    fault_id = fault_.id

    async def send() -> dict[str, ControlResult]:
        async with asyncio.timeout(target.timeout) as connecting, aiomqtt.Client(
            broker.host, broker.port, identifier=identifier, tls_context=tls, timeout=target.timeout
        ) as client:
            replies = ControlReplies(client, topics)
            await replies.subscribe(vins)
            await FaultOperator(client, topics).send(vins, fault_)
            connecting.reschedule(None)  # sent: the cars' answers have a timeout of their own
            return await replies.wait(fault_id, vins, timeout=target.timeout)

    try:
        answers = asyncio.run(send())
    except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
        raise click.ClickException(f"{broker}: could not publish the fault: {exc or type(exc).__name__}") from None
    cars = f"{len(vins)} car{'s' if len(vins) != 1 else ''}" if len(vins) != 1 else vins[0]
    refused = {vin: reply.error or "no reason given" for vin, reply in answers.items() if not reply.ok}
    silent = [vin for vin in vins if vin not in answers]
    applied = len(answers) - len(refused)
    click.echo(f"{describe_fault(fault_)} sent to {cars} (id {fault_id}): {applied} applied"
               + (f", {len(refused)} refused" if refused else "") + (f", {len(silent)} no answer" if silent else ""))
    for vin, why in refused.items():
        click.echo(f"{vin}: refused: {why}", err=True)
    if silent:
        shown = ", ".join(silent[:5]) + (f" and {len(silent) - 5} more" if len(silent) > 5 else "")
        click.echo(f"no car answered within {target.timeout:g} s: {shown} (in the running fleet?)", err=True)
    if refused or silent:
        raise click.exceptions.Exit(1)


def _send_toxiproxy(target: _Target, fault_: CarFault) -> None:
    assert target.toxiproxy_url is not None  # only called with --toxiproxy
    if not isinstance(fault_, _TOXICS) and not isinstance(fault_, ClearFault):
        raise click.UsageError(f"{fault_.kind.value} is a car fault; --toxiproxy takes transport faults only")
    try:
        client = ToxiproxyClient(target.toxiproxy_url, timeout=target.timeout)
    except ToxiproxyError as exc:
        raise click.BadParameter(str(exc), param_hint="--toxiproxy") from None
    routes = target.routes()

    async def apply() -> None:
        for route in routes:
            if isinstance(fault_, _TOXICS):
                await client.add_toxic(route, fault_)
            else:
                await client.clear_route(route)

    try:
        asyncio.run(apply())
    except ToxiproxyError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{describe_fault(fault_)} on Toxiproxy proxies {', '.join(client.proxy_name(r) for r in routes)}")


_TOXICS = (LatencyFault, BandwidthFault, BlackHoleFault, ResetFault, SlicerFault, DataLimitFault)
_DIRECTIONS = click.Choice([d.value for d in Direction])


def _fault_command(name: str, help_text: str) -> Callable[[Callable[..., CarFault]], click.Command]:
    """A subcommand whose function builds the fault from its options; the group's target receives it."""

    def decorate(build: Callable[..., CarFault]) -> click.Command:
        @click.pass_obj
        def run(target: _Target, /, **options: Any) -> None:
            try:
                built = build(scope=target.scope, **options)
            except ValueError as exc:  # pydantic's ValidationError is a ValueError
                raise click.BadParameter(str(exc).splitlines()[-1] if str(exc) else repr(exc)) from None
            _send(target, built)

        run.__doc__ = help_text
        command = click.command(name, help=help_text)(run)
        for param in reversed(getattr(build, "__click_params__", [])):
            command.params.append(param)
        fault.add_command(command)
        return command

    return decorate


def _for_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--for", "for_", default=None, help="How long (clock time), e.g. 30s; default: until clear.")(
        func
    )


@_fault_command("offline", "No network: the connection dies (the broker fires the last will), the outbox fills.")
@_for_option
@click.option("--soft", is_flag=True, help="Say goodbye first (DISCONNECT: no last will).")
def _offline(scope: Scope, for_: str | None, soft: bool) -> CarFault:
    return OfflineFault(duration_s=_duration(for_), hard=not soft)


@_fault_command("online", "End an operator's offline (zones and random outages keep their own).")
def _online(scope: Scope) -> CarFault:
    return OnlineFault()


@_fault_command("flaky", "Random drops: --drop-rate per connected minute, outages around --outage.")
@_for_option
@click.option("--drop-rate", type=click.FloatRange(0, 1, min_open=True), default=0.1, show_default=True)
@click.option("--outage", default="30s", show_default=True, help="Mean outage length.")
@click.option("--distribution", type=click.Choice([d.value for d in OutageDistribution]), default="exponential",
              show_default=True)
def _flaky(scope: Scope, for_: str | None, drop_rate: float, outage: str, distribution: str) -> CarFault:
    return FlakyFault(
        duration_s=_duration(for_), drop_rate=drop_rate, outage_s=_duration(outage) or 30.0,
        distribution=OutageDistribution(distribution),
    )


@_fault_command("weak", "Weak signal: low signal_pct, occasional short drops, latency on the car's proxy route.")
@_for_option
@click.option("--signal", "signal_pct", type=click.IntRange(0, 100), default=15, show_default=True)
@click.option("--drop-rate", type=click.FloatRange(0, 1), default=0.05, show_default=True)
@click.option("--outage", default="5s", show_default=True)
@click.option("--latency", default="400ms", show_default=True)
@click.option("--jitter", default="300ms", show_default=True)
@click.option("--rate", "rate_kb_s", type=click.FloatRange(min=0, min_open=True), default=None, help="KB/s.")
def _weak(
    scope: Scope, for_: str | None, signal_pct: int, drop_rate: float, outage: str, latency: str, jitter: str,
    rate_kb_s: float | None,
) -> CarFault:
    return WeakSignalFault(
        duration_s=_duration(for_), signal_pct=signal_pct, drop_rate=drop_rate, outage_s=_duration(outage) or 5.0,
        latency_ms=_millis(latency), jitter_ms=_millis(jitter), rate_kb_s=rate_kb_s,
    )


@_fault_command(
    "skew",
    "The car's clock is OFFSET off (10m: ahead; behind: `skew -- -90s`); it stamps and judges messages by it.",
)
@_for_option
@click.argument("offset")
def _skew(scope: Scope, for_: str | None, offset: str) -> CarFault:
    return ClockSkewFault(duration_s=_duration(for_), skew_s=_signed_duration(offset))


@_fault_command("restart", "The TCU reboots: its connection dies and comes back after --boot.")
@click.option("--boot", default="5s", show_default=True)
def _restart(scope: Scope, boot: str) -> CarFault:
    return RestartFault(duration_s=_duration(boot))


@_fault_command("latency", "Hold every byte DELAY (± --jitter) on the proxy route, order kept.")
@_for_option
@click.argument("delay")
@click.option("--jitter", default="0ms", show_default=True)
@click.option("--direction", type=_DIRECTIONS, default="both", show_default=True)
def _latency(scope: Scope, for_: str | None, delay: str, jitter: str, direction: str) -> CarFault:
    return LatencyFault(
        duration_s=_duration(for_), latency_ms=_millis(delay), jitter_ms=_millis(jitter),
        direction=Direction(direction), scope=scope,
    )


@_fault_command("bandwidth", "At most RATE kilobytes per second on the proxy route.")
@_for_option
@click.argument("rate", type=click.FloatRange(min=0, min_open=True))
@click.option("--direction", type=_DIRECTIONS, default="both", show_default=True)
def _bandwidth(scope: Scope, for_: str | None, rate: float, direction: str) -> CarFault:
    return BandwidthFault(duration_s=_duration(for_), rate_kb_s=rate, direction=Direction(direction), scope=scope)


@_fault_command("blackhole", "Data vanishes on the proxy route; connections stay open (or close after a while).")
@_for_option
@click.option("--close-after", default=None, help="Close connections after this long (e.g. 10s).")
@click.option("--direction", type=_DIRECTIONS, default="both", show_default=True)
def _blackhole(scope: Scope, for_: str | None, close_after: str | None, direction: str) -> CarFault:
    close_ms = None if close_after is None else _millis(close_after)
    return BlackHoleFault(duration_s=_duration(for_), close_after_ms=close_ms, direction=Direction(direction),
                          scope=scope)


@_fault_command("reset", "Reset (TCP RST) the connections on the proxy route, --after a delay.")
@_for_option
@click.option("--after", default="0s", show_default=True)
def _reset(scope: Scope, for_: str | None, after: str) -> CarFault:
    return ResetFault(duration_s=_duration(for_), after_ms=_millis(after), scope=scope)


@_fault_command("slice", "Cut writes into --size ± --variation byte pieces, --delay apart.")
@_for_option
@click.option("--size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--variation", type=click.IntRange(min=0), default=4, show_default=True)
@click.option("--delay", default="1ms", show_default=True)
def _slice(scope: Scope, for_: str | None, size: int, variation: int, delay: str) -> CarFault:
    return SlicerFault(
        duration_s=_duration(for_), average_size=size, size_variation=variation,
        delay_us=round(_millis(delay) * 1000), scope=scope,
    )


@_fault_command("limit", "Close a connection once BYTES have passed on the proxy route.")
@_for_option
@click.argument("size", metavar="BYTES", type=click.IntRange(min=1))
@click.option("--direction", type=_DIRECTIONS, default="both", show_default=True)
def _limit(scope: Scope, for_: str | None, size: int, direction: str) -> CarFault:
    return DataLimitFault(duration_s=_duration(for_), bytes=size, direction=Direction(direction), scope=scope)


@_fault_command("clear", "End the cars' faults (all, or one family).")
@click.option("--what", type=click.Choice([w.value for w in ClearWhat]), default="all", show_default=True)
def _clear(scope: Scope, what: str) -> CarFault:
    return ClearFault(what=ClearWhat(what))


@fault.command("broker")
@click.argument("action", type=click.Choice(BROKER_ACTIONS))
@click.option("--control", "control_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The run's broker control socket (default: <state>/broker.sock).")
@click.option("--state", "state_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The run's state directory (here or before `broker`).")
@click.pass_obj
def _broker(target: _Target, action: str, control_path: Path | None, state_dir: Path | None) -> None:
    """Stop, kill, start or restart the broker a run started (or show its status)."""
    path = control_path or (state_dir or target.state) / "broker.sock"
    try:
        reply = asyncio.run(broker_control(path, action, timeout=max(target.timeout, 30.0)))
    except BrokerControlError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"broker {action}: {'running' if reply.get('running') else 'not running'}")
