"""What a fault is, as data (pure, no I/O): the `params` of a `fault` control and of a timeline step.

A fault is a pydantic model picked by its `kind`:

    {"kind": "offline", "duration_s": 30}                 the car loses its network (last will fires)
    {"kind": "online"}                                     the operator's offline hold ends
    {"kind": "flaky", "drop_rate": 0.2, "outage_s": 20}    random drops while connected
    {"kind": "weak_signal", "signal_pct": 12}              low signal, drops, and latency on its proxy route
    {"kind": "clock_skew", "skew_s": 600}                  the car's clock runs 10 minutes ahead
    {"kind": "restart", "duration_s": 5}                   the TCU reboots (hard drop, back after boot)
    {"kind": "latency", "latency_ms": 300, "jitter_ms": 50, "scope": "group"}
    {"kind": "bandwidth", "rate_kb_s": 2}
    {"kind": "black_hole"}  {"kind": "reset", "after_ms": 0}
    {"kind": "slicer", "average_size": 8}  {"kind": "data_limit", "bytes": 4096}
    {"kind": "clear", "what": "all"}

Every fault may carry `duration_s` (it ends by itself after that much clock time) and `id` (a fault delivered
twice — MQTT QoS 1 is at-least-once — is applied once). The transport kinds are also `Toxic`s: the same
models drive the in-process `FaultProxy` and a Toxiproxy server.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from tcu_sim.fleet import Duration, OutageDistribution, ScenarioAction, ScenarioStep, format_duration

from ._errors import FaultSpecError

__all__ = [
    "CONNECTIVITY_KINDS",
    "TRANSPORT_KINDS",
    "BandwidthFault",
    "BlackHoleFault",
    "CarFault",
    "ClearFault",
    "ClearWhat",
    "ClockSkewFault",
    "DataLimitFault",
    "Direction",
    "FaultKind",
    "FlakyFault",
    "LatencyFault",
    "OfflineFault",
    "OnlineFault",
    "OutageDistribution",
    "ResetFault",
    "RestartFault",
    "Scope",
    "SlicerFault",
    "Toxic",
    "WeakSignalFault",
    "describe_fault",
    "fault_for_step",
    "parse_fault",
    "step_fault_params",
]

_MAX_S = 10 * 365 * 86_400.0  # ten years: long enough for any skew or outage, short enough to stay finite


class FaultKind(StrEnum):
    """Every kind of fault a car (or its proxy route) can be given."""

    OFFLINE = "offline"
    ONLINE = "online"
    FLAKY = "flaky"
    WEAK_SIGNAL = "weak_signal"
    CLOCK_SKEW = "clock_skew"
    RESTART = "restart"
    LATENCY = "latency"
    BANDWIDTH = "bandwidth"
    BLACK_HOLE = "black_hole"
    RESET = "reset"
    SLICER = "slicer"
    DATA_LIMIT = "data_limit"
    CLEAR = "clear"


TRANSPORT_KINDS = frozenset(
    {
        FaultKind.LATENCY,
        FaultKind.BANDWIDTH,
        FaultKind.BLACK_HOLE,
        FaultKind.RESET,
        FaultKind.SLICER,
        FaultKind.DATA_LIMIT,
    }
)
CONNECTIVITY_KINDS = frozenset({FaultKind.OFFLINE, FaultKind.FLAKY, FaultKind.WEAK_SIGNAL, FaultKind.RESTART})


class Direction(StrEnum):
    """Which way a transport fault acts: `upstream` is car → broker, `downstream` broker → car."""

    BOTH = "both"
    UPSTREAM = "upstream"
    DOWNSTREAM = "downstream"

    def covers(self, upstream: bool) -> bool:
        """Whether data flowing upstream (True) or downstream (False) is affected."""
        return self is Direction.BOTH or (self is Direction.UPSTREAM) == upstream


class Scope(StrEnum):
    """Whose proxy route a transport fault sent to one car acts on: the car's own, or its whole group's."""

    CAR = "car"
    GROUP = "group"


class ClearWhat(StrEnum):
    """What a `clear` fault ends."""

    ALL = "all"
    CONNECTIVITY = "connectivity"
    TRANSPORT = "transport"
    CLOCK = "clock"


Seconds = Annotated[Duration, Field(gt=0, le=_MAX_S)]
Millis = Annotated[float, Field(ge=0, le=3_600_000, allow_inf_nan=False)]


class _Fault(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    id: str | None = Field(default=None, min_length=1, max_length=64)
    """Set by whoever sends the fault, so that a redelivered copy is recognised and applied once."""
    duration_s: Seconds | None = None
    """The fault ends by itself after this many clock seconds (None: until cleared)."""


class OfflineFault(_Fault):
    """No network at all. `hard`: the connection just dies (the broker fires the last will); otherwise the
    TCU says goodbye first (DISCONNECT, no will)."""

    kind: Literal[FaultKind.OFFLINE] = FaultKind.OFFLINE
    hard: bool = True


class OnlineFault(_Fault):
    """Ends an operator's `offline` (zones and random outages keep their own hold)."""

    kind: Literal[FaultKind.ONLINE] = FaultKind.ONLINE


class FlakyFault(_Fault):
    """A flaky connection: while connected, each minute it drops with chance `drop_rate`; each outage lasts
    `outage_s` on average, drawn from `distribution` with the car's own seeded random stream."""

    kind: Literal[FaultKind.FLAKY] = FaultKind.FLAKY
    drop_rate: float = Field(default=0.1, gt=0, le=1)
    outage_s: Seconds = 30.0
    distribution: OutageDistribution = OutageDistribution.EXPONENTIAL


class WeakSignalFault(_Fault):
    """A weak signal: the car reports `signal_pct`, loses its connection now and then (`drop_rate` per minute,
    short outages), and — on its own fault-proxy route — every byte is late by `latency_ms` ± `jitter_ms` and
    squeezed to `rate_kb_s`."""

    kind: Literal[FaultKind.WEAK_SIGNAL] = FaultKind.WEAK_SIGNAL
    signal_pct: int = Field(default=15, ge=0, le=100)
    drop_rate: float = Field(default=0.05, ge=0, le=1)
    outage_s: Seconds = 5.0
    distribution: OutageDistribution = OutageDistribution.EXPONENTIAL
    latency_ms: Millis = 400.0
    jitter_ms: Millis = 300.0
    rate_kb_s: float | None = Field(default=None, gt=0, le=1_000_000)


class ClockSkewFault(_Fault):
    """The car's clock is `skew_s` seconds off (positive: ahead). It stamps `iat`/`exp` and judges the `exp` of
    commands by that clock."""

    kind: Literal[FaultKind.CLOCK_SKEW] = FaultKind.CLOCK_SKEW
    skew_s: float = Field(ge=-_MAX_S, le=_MAX_S, allow_inf_nan=False)


class RestartFault(_Fault):
    """The TCU reboots: the connection dies at once and comes back after `duration_s` (default 5 s of boot)."""

    kind: Literal[FaultKind.RESTART] = FaultKind.RESTART


class ClearFault(_Fault):
    """Ends the car's faults: all of them, or one family."""

    kind: Literal[FaultKind.CLEAR] = FaultKind.CLEAR
    what: ClearWhat = ClearWhat.ALL


class _TransportFault(_Fault):
    direction: Direction = Direction.BOTH
    scope: Scope = Scope.CAR


class LatencyFault(_TransportFault):
    """Every chunk of data is held `latency_ms` ± `jitter_ms` (order kept), like Toxiproxy's `latency`."""

    kind: Literal[FaultKind.LATENCY] = FaultKind.LATENCY
    latency_ms: Millis
    jitter_ms: Millis = 0.0


class BandwidthFault(_TransportFault):
    """At most `rate_kb_s` kilobytes (1000 bytes) per second, like Toxiproxy's `bandwidth`."""

    kind: Literal[FaultKind.BANDWIDTH] = FaultKind.BANDWIDTH
    rate_kb_s: float = Field(gt=0, le=1_000_000, allow_inf_nan=False)


class BlackHoleFault(_TransportFault):
    """Data vanishes; the connection stays open (or closes after `close_after_ms`), like Toxiproxy's `timeout`."""

    kind: Literal[FaultKind.BLACK_HOLE] = FaultKind.BLACK_HOLE
    close_after_ms: Millis | None = None


class ResetFault(_TransportFault):
    """Connections are reset (TCP RST) `after_ms` after they carry data or after the fault starts, like
    Toxiproxy's `reset_peer`. New connections are reset the same way while the fault lasts."""

    kind: Literal[FaultKind.RESET] = FaultKind.RESET
    after_ms: Millis = 0.0


class SlicerFault(_TransportFault):
    """Writes are cut into pieces of `average_size` ± `size_variation` bytes, `delay_us` apart (Toxiproxy's
    `slicer`): MQTT packets arrive in fragments."""

    kind: Literal[FaultKind.SLICER] = FaultKind.SLICER
    average_size: int = Field(default=8, ge=1, le=65_536)
    size_variation: int = Field(default=4, ge=0, le=65_535)
    delay_us: int = Field(default=1000, ge=0, le=10_000_000)


class DataLimitFault(_TransportFault):
    """A connection is closed once `bytes` have passed in the fault's direction (Toxiproxy's `limit_data`)."""

    kind: Literal[FaultKind.DATA_LIMIT] = FaultKind.DATA_LIMIT
    bytes: int = Field(ge=1, le=1 << 40)


Toxic = LatencyFault | BandwidthFault | BlackHoleFault | ResetFault | SlicerFault | DataLimitFault
"""A transport fault, as the fault proxy and the Toxiproxy adapter apply it."""

CarFault = Annotated[
    OfflineFault
    | OnlineFault
    | FlakyFault
    | WeakSignalFault
    | ClockSkewFault
    | RestartFault
    | ClearFault
    | LatencyFault
    | BandwidthFault
    | BlackHoleFault
    | ResetFault
    | SlicerFault
    | DataLimitFault,
    Field(discriminator="kind"),
]
"""Any fault a car can be given (the `params` of a `fault` control)."""

_ADAPTER: TypeAdapter[CarFault] = TypeAdapter(CarFault)


def parse_fault(params: Mapping[str, Any]) -> CarFault:
    """The fault described by `params` (untrusted JSON or YAML); FaultSpecError naming the field otherwise."""
    if not isinstance(params, Mapping):
        raise FaultSpecError(f"fault params must be an object, got {type(params).__name__}")
    if "kind" not in params:
        kinds = ", ".join(k.value for k in FaultKind)
        raise FaultSpecError(f"kind: missing; one of {kinds}")
    try:
        return _ADAPTER.validate_python(dict(params))
    except ValidationError as exc:
        raise FaultSpecError(_first_problem(exc)) from None


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    # The union's discriminator adds the kind as the first loc part; drop it, the kind is known to the reader.
    loc = [str(p) for p in error["loc"] if str(p) not in {k.value for k in FaultKind}]
    where = ".".join(loc) or "params"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown parameter"
    return f"{where}: {message}"


_STEP_KINDS: dict[ScenarioAction, FaultKind] = {
    ScenarioAction.GO_OFFLINE: FaultKind.OFFLINE,
    ScenarioAction.GO_ONLINE: FaultKind.ONLINE,
    ScenarioAction.WEAK_SIGNAL: FaultKind.WEAK_SIGNAL,
    ScenarioAction.FLAKY: FaultKind.FLAKY,
    ScenarioAction.CLOCK_SKEW: FaultKind.CLOCK_SKEW,
    ScenarioAction.RESTART_CAR: FaultKind.RESTART,
    ScenarioAction.LATENCY: FaultKind.LATENCY,
    ScenarioAction.BANDWIDTH: FaultKind.BANDWIDTH,
    ScenarioAction.BLACK_HOLE: FaultKind.BLACK_HOLE,
    ScenarioAction.RESET_CONNECTIONS: FaultKind.RESET,
    ScenarioAction.SLICER: FaultKind.SLICER,
    ScenarioAction.DATA_LIMIT: FaultKind.DATA_LIMIT,
    ScenarioAction.CLEAR_FAULTS: FaultKind.CLEAR,
}


def step_fault_params(step: ScenarioStep) -> dict[str, Any] | None:
    """The fault params a timeline step stands for (its action gives the kind, `duration` the duration), or None
    when the step is no fault (a person at the car, an app request, an attack, the broker, a check)."""
    if step.do is ScenarioAction.FAULT:
        params = dict(step.params)
    elif step.do in _STEP_KINDS:
        params = {"kind": _STEP_KINDS[step.do].value, **step.params}
    else:
        return None
    if step.duration is not None:
        params.setdefault("duration_s", step.duration)
    return params


def fault_for_step(step: ScenarioStep) -> CarFault | None:
    """The fault of a timeline step (see `step_fault_params`); FaultSpecError when its params do not fit."""
    params = step_fault_params(step)
    return None if params is None else parse_fault(params)


def describe_fault(fault: CarFault) -> str:
    """A short human description, for logs and reports (`latency 300ms ±50ms (group)`)."""
    parts: list[str] = [fault.kind.value]
    match fault:
        case OfflineFault():
            parts.append("hard" if fault.hard else "soft")
        case FlakyFault():
            parts.append(f"drop {fault.drop_rate:g}/min, outage ~{_s(fault.outage_s)} {fault.distribution.value}")
        case WeakSignalFault():
            parts.append(f"signal {fault.signal_pct}%, drop {fault.drop_rate:g}/min, +{fault.latency_ms:g}ms")
        case ClockSkewFault():
            parts.append(f"{fault.skew_s:+g}s")
        case LatencyFault():
            parts.append(f"{fault.latency_ms:g}ms ±{fault.jitter_ms:g}ms")
        case BandwidthFault():
            parts.append(f"{fault.rate_kb_s:g} KB/s")
        case BlackHoleFault() if fault.close_after_ms is not None:
            parts.append(f"close after {fault.close_after_ms:g}ms")
        case ResetFault():
            parts.append(f"after {fault.after_ms:g}ms")
        case SlicerFault():
            parts.append(f"{fault.average_size}±{fault.size_variation} B every {fault.delay_us}us")
        case DataLimitFault():
            parts.append(f"{fault.bytes} B")
        case ClearFault():
            parts.append(fault.what.value)
        case _:
            pass
    if isinstance(fault, _TransportFault):
        if fault.direction is not Direction.BOTH:
            parts.append(fault.direction.value)
        if fault.scope is Scope.GROUP:
            parts.append("(group)")
    if fault.duration_s is not None:
        parts.append(f"for {_s(fault.duration_s)}")
    return " ".join(parts)


def _s(seconds: float) -> str:
    return format_duration(seconds)
