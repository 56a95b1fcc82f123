"""The car's side of the network: MQTT links driven in bulk, reconnect backoff, the outbox, the TCU session."""

from tcu_sim.transport._backoff import Backoff
from tcu_sim.transport._link import BrokerAddress, ClientCertificate, LinkCallbacks, LinkPool, MqttLink
from tcu_sim.transport._outbox import Outbox, OutboxEntry
from tcu_sim.transport._seqstore import SeqStore
from tcu_sim.transport._session import UNKNOWN_COMMAND_ID, FaultHandler, SessionStats, TcuConfig, TcuSession

__all__ = [
    "UNKNOWN_COMMAND_ID",
    "Backoff",
    "BrokerAddress",
    "ClientCertificate",
    "FaultHandler",
    "LinkCallbacks",
    "LinkPool",
    "MqttLink",
    "Outbox",
    "OutboxEntry",
    "SeqStore",
    "SessionStats",
    "TcuConfig",
    "TcuSession",
]
