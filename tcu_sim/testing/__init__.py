"""Test harness for tcu-sim and for projects testing against it (the pytest plugin lives in `.plugin`).

- `MosquittoBroker`: a real Mosquitto with the generated configuration (TLS, ACLs, CRL, persistence) on free
  loopback ports, restartable on the same ports, with aiomqtt client helpers per identity.
- `probe_connect` / `ConnectOutcome`: one fast MQTT CONNECT that names the TLS alert when a broker refuses a
  certificate.
- `Inbox`: records what a client receives, to await one message and prove another never came.
"""

from __future__ import annotations

from ._inbox import Inbox
from ._mosquitto import MosquittoBroker, MosquittoError, MosquittoNotFound, find_mosquitto, free_ports
from ._probe import ConnectOutcome, probe_connect

__all__ = [
    "ConnectOutcome",
    "Inbox",
    "MosquittoBroker",
    "MosquittoError",
    "MosquittoNotFound",
    "find_mosquitto",
    "free_ports",
    "probe_connect",
]
