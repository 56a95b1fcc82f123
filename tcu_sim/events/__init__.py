"""The event stream of cloud and fleet (SPEC §8): typed events, one way to subscribe.

A bottom-layer package like `tcu_sim.protocol` and `tcu_sim.clock`: both the simulator and the cloud (`broker`)
publish into an `EventStream` they are given, and the live view, the scenario observer, the test harness's
waiters and anything else read it through `EventStream.subscribe` — never by replacing a method of the cloud or
the fleet. See docs/architecture.md.
"""

from __future__ import annotations

from ._events import (
    AlertFired,
    AppRequestRefused,
    BrokerAction,
    CarCommandHandled,
    CarConnectFailed,
    CarConnection,
    CarControlHandled,
    CarMessageHandled,
    CloudConnection,
    CommandChanged,
    Event,
    FaultChanged,
    RoadsideCaseOpened,
    Source,
)
from ._stream import DEFAULT_BUFFER, EventStream, Subscription

__all__ = [
    "DEFAULT_BUFFER",
    "AlertFired",
    "AppRequestRefused",
    "BrokerAction",
    "CarCommandHandled",
    "CarConnectFailed",
    "CarConnection",
    "CarControlHandled",
    "CarMessageHandled",
    "CloudConnection",
    "CommandChanged",
    "Event",
    "EventStream",
    "FaultChanged",
    "RoadsideCaseOpened",
    "Source",
    "Subscription",
]
