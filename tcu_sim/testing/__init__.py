"""Test harness for tcu-sim and for projects testing against it (the pytest plugin lives in `.plugin`).

- `Sandbox`: a broker, the cloud and fleets on one virtual clock, for one test or script; its parts are
  `SimBroker` (Mosquitto, the embedded broker or an external one), `SimCloud`, `SimFleet` / `SimCar`,
  `SimUser`, `SimFaults` and `SimClock`, with await-style helpers whose failures (`WaitTimeout`,
  `CommandFailed`) quote the car's last status and the command's history. `Sandbox.events` is the one
  `tcu_sim.events.EventStream` its cloud and fleets publish into; the waiters read it too.
- `MosquittoBroker`: a real Mosquitto with the generated configuration (TLS, ACLs, CRL, persistence) on free
  loopback ports, restartable on the same ports, with aiomqtt client helpers per identity (from
  `broker.mosquitto`, the launcher the stack and the bench use too).
- `probe_connect` / `ConnectOutcome`: one fast MQTT CONNECT that names the TLS alert when a broker refuses a
  certificate (also from `broker.mosquitto`).
- `Inbox`: records what a client receives, to await one message and prove another never came.

Nothing here imports pytest: scripts can use the harness without it.
"""

from __future__ import annotations

from broker.mosquitto import (
    ConnectOutcome,
    MosquittoBroker,
    MosquittoError,
    MosquittoNotFound,
    find_mosquitto,
    free_ports,
    probe_connect,
)

from ._brokers import AppLogin, BrokerKind, SimBroker
from ._clock import SimClock
from ._cloud import SimCloud
from ._errors import CarControlRefused, CommandFailed, HarnessError, HarnessSetupError, NotSupported, WaitTimeout
from ._factories import AppUserFactory, FleetFactory
from ._faults import SimFaults
from ._fleet import SimCar, SimFleet
from ._inbox import Inbox
from ._sandbox import DEFAULT_FLEET, Sandbox, derive_seed, resolve_fleet
from ._user import SimUser

__all__ = [
    "DEFAULT_FLEET",
    "AppLogin",
    "AppUserFactory",
    "BrokerKind",
    "CarControlRefused",
    "CommandFailed",
    "ConnectOutcome",
    "FleetFactory",
    "HarnessError",
    "HarnessSetupError",
    "Inbox",
    "MosquittoBroker",
    "MosquittoError",
    "MosquittoNotFound",
    "NotSupported",
    "Sandbox",
    "SimBroker",
    "SimCar",
    "SimClock",
    "SimCloud",
    "SimFaults",
    "SimFleet",
    "SimUser",
    "WaitTimeout",
    "derive_seed",
    "find_mosquitto",
    "free_ports",
    "probe_connect",
    "resolve_fleet",
]
