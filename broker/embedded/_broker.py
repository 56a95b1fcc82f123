"""The embedded broker: amqtt in this process, so that `tcu-sim up` needs nothing but Python.

Two modes:

- **open** (no `pki`): one plaintext listener, anyone may connect and use any topic. For a laptop demo only.
- **secured** (`pki` given): `port` is a mutual-TLS device listener (client certificate from the fleet CA required,
  CRL checked in the handshake and the revocation record re-checked on every CONNECT, identity = CN), `app_port`
  an optional app listener (username + `$7$` password, TLS unless `app_tls=False`); every PUBLISH, SUBSCRIBE and
  delivery is checked against the same `AclPolicy` Mosquitto's ACL files are generated from.

What amqtt 0.12 cannot do that the Mosquitto set-up does (use Mosquitto when these matter):

- MQTT 5 is not supported (CONNECT with protocol level 5 is refused): no reason codes, no shared subscriptions —
  `$share/...` subscriptions are refused (SUBACK 0x80), so cloud instances cannot split the load.
- No persistence: sessions, subscriptions, queued QoS 1 and retained messages live in memory and are gone after
  a stop (amqtt's `contrib.persistence.SessionDBPlugin` needs SQLAlchemy, which tcu-sim does not depend on).
- amqtt handles the session before authentication: a CONNECT with another client's id deletes that client's
  session (clean session) or takes it over (persistent session) even when the CONNECT is then refused. On the
  device listener the broker forces the client id to the certificate's CN before the session is looked up (as
  Mosquitto's `use_username_as_clientid` does, SPEC §7), so a certificate holder reaches only its own session;
  on the app listener anyone who can reach the port can still disconnect an app or wipe its subscriptions.
- The TLS handshake checks the CRL as it was at start; a later revocation is caught by the plugin, which reads
  the revocation record at every CONNECT (Mosquitto needs a reload). In both brokers a connection that is
  already open stays open until the client reconnects.
- The retain flag cannot be forbidden per topic (neither can Mosquitto 2.0 with ACL files).

Stricter than Mosquitto here: an app must use its username as client id, a last will must be on a
topic the client may publish to (refused at CONNECT), and a subscription wider than the client's rights is
refused (SUBACK 0x80) instead of granted and filtered per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action, BrokerConfig, ListenerConfig
from amqtt.errors import AMQTTError
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import Session
from amqtt.utils import gen_client_id

from broker.mosquitto import AclPolicy, hash_password, validate_app_username
from broker.pki import FleetPKI

from ._plugins import SecurityState, certificate_name

__all__ = ["EmbeddedBroker"]

_log = logging.getLogger(__name__)
_STOP_TIMEOUT_S = 10.0
_RECANCEL_EVERY_S = 0.25

_DEVICE = "default"  # amqtt requires a listener called "default"; in secured mode it is the device listener
_APP = "app"
_PLUGINS = "broker.embedded._plugins"


class _TcuSimBroker(Broker):  # type: ignore[misc]  # amqtt ships no type information
    """amqtt's Broker with per-listener TLS from the fleet PKI and retained messages delivered only to
    subscribers of the filter."""

    def __init__(self, config: BrokerConfig, contexts: Mapping[str, ssl.SSLContext]) -> None:
        self._tcu_sim_contexts = dict(contexts)
        super().__init__(config)

    def _create_ssl_context(self, listener: ListenerConfig) -> ssl.SSLContext:
        # amqtt builds one context for every TLS listener with CERT_OPTIONAL and no CRL; use ours, found by bind.
        for name, candidate in self.listeners_config.items():
            if candidate is listener and name in self._tcu_sim_contexts:
                return self._tcu_sim_contexts[name]
        raise ValueError(f"no TLS context for listener {listener.bind}")

    async def _initialize_client_session(
        self, reader: ReaderAdapter, writer: WriterAdapter, remote_address: str, remote_port: int
    ) -> tuple[BrokerProtocolHandler, Session]:
        # amqtt 0.12's own method, with one step added: a certificate holder's client id becomes its CN *before*
        # the session is deleted (clean session) or looked up, so no CONNECT can take over or wipe another
        # identity's session (SPEC §7; Mosquitto: use_username_as_clientid on the device listener).
        try:
            handler, session = await BrokerProtocolHandler.init_from_connect(reader, writer, self.plugins_manager)
        except AMQTTError as exc:
            _log.warning("%s:%s: first packet is not a CONNECT: %s", remote_address, remote_port, exc)
            raise
        ssl_object = session.ssl_object
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        name = certificate_name(der) if der else None
        if name is not None and session.client_id != name:
            _log.warning("client id %r of certificate %s forced to its CN", str(session.client_id)[:64], name)
            session.client_id = name
        if session.clean_session:
            if session.client_id:
                await self._delete_session(session.client_id)
            else:
                session.client_id = gen_client_id()
            session.parent = 0
        elif session.client_id in self._sessions:
            existing, _ = self._sessions[session.client_id]
            for attribute in ("will_flag", "will_message", "will_topic", "will_qos", "keep_alive", "username"):
                setattr(existing, attribute, getattr(session, attribute))
            existing.password = session.password
            existing.ssl_object = session.ssl_object  # the plugin checks this connection's certificate
            session = existing
            session.parent = 1
        else:
            session.parent = 0
        delay = self.config.get("timeout-disconnect-delay", 0)
        if session.keep_alive > 0 and isinstance(delay, int):
            session.keep_alive += delay
        return handler, session

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        # amqtt calls this at every CONNECT for every filter *any* client subscribed to, which would hand a
        # connecting client retained messages it never subscribed to (another car's status). Only the
        # client's own, permitted subscriptions get their retained messages.
        topic_filter = subscription[0]
        holders = self._subscriptions.get(topic_filter, [])
        if not any(holder.client_id == session.client_id for holder, _ in holders):
            return
        if not await self._topic_filtering(session, topic_filter, Action.SUBSCRIBE):
            return
        await super()._publish_retained_messages_for_subscription(subscription, session)


class EmbeddedBroker:
    """amqtt broker as an async context manager (see the module docstring for the two modes)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1883,
        *,
        pki: FleetPKI | None = None,
        app_port: int | None = None,
        app_tls: bool = True,
        app_users: Mapping[str, str] | None = None,
        topic_prefix: str = "",
        policy: AclPolicy | None = None,
    ) -> None:
        if pki is None and (app_port is not None or app_users):
            raise ValueError("an app listener needs the secured mode (pass pki)")
        self.host = host
        self.port = port
        self.app_port = app_port
        self.app_tls = app_tls
        self.pki = pki
        self.policy = policy if policy is not None else AclPolicy(topic_prefix)
        hashes = {validate_app_username(user): hash_password(pw) for user, pw in (app_users or {}).items()}
        self._state = SecurityState(policy=self.policy, pki=pki, app_hashes=hashes)
        self._broker: _TcuSimBroker | None = None

    @property
    def secured(self) -> bool:
        """True in secured mode (mutual TLS, passwords, ACLs)."""
        return self.pki is not None

    @property
    def running(self) -> bool:
        """True between start() and stop()."""
        return self._broker is not None

    def _bind(self, port: int) -> str:
        return f"[{self.host}]:{port}" if ":" in self.host else f"{self.host}:{port}"

    def _config(self) -> tuple[BrokerConfig, dict[str, ssl.SSLContext]]:
        plugins: dict[str, Any]
        listeners: dict[str, Any]
        contexts: dict[str, ssl.SSLContext] = {}
        if self.pki is None:
            listeners = {_DEVICE: {"type": "tcp", "bind": self._bind(self.port)}}
            plugins = {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}
        else:
            server = self.pki.ensure_server()
            tls_files = {"ssl": True, "certfile": str(server.paths.cert), "keyfile": str(server.paths.key)}
            listeners = {_DEVICE: {"type": "tcp", "bind": self._bind(self.port), **tls_files}}
            contexts[_DEVICE] = self.pki.server_ssl_context(verify_clients=True)
            if self.app_port is not None:
                listeners[_APP] = {"type": "tcp", "bind": self._bind(self.app_port), **tls_files}
                if self.app_tls:
                    contexts[_APP] = self.pki.server_ssl_context(verify_clients=False)
            plugins = {
                f"{_PLUGINS}.IdentityAuthPlugin": {"state": self._state},
                f"{_PLUGINS}.AclTopicPlugin": {"state": self._state},
            }
        config = BrokerConfig.from_dict({"listeners": listeners, "plugins": plugins})
        if self.app_port is not None and not self.app_tls:
            # Listeners inherit unset fields from "default" (the TLS device listener): switch TLS off again.
            config.listeners[_APP].ssl = False
        return config, contexts

    async def start(self) -> None:
        """Open the listeners."""
        if self._broker is not None:
            raise RuntimeError("the embedded broker is already running")
        config, contexts = self._config()
        broker = _TcuSimBroker(config, contexts)
        await broker.start()
        self._broker = broker
        _log.info("embedded broker listening on %s:%s (secured=%s)", self.host, self.port, self.secured)

    async def stop(self) -> None:
        """Close the listeners and every session.

        amqtt stops a session by cancelling its reader task and waiting until the reader says it stopped; on
        Python 3.11 that cancellation can be lost inside the reader's `asyncio.wait_for` (a race with data
        arriving), and the shutdown then waits forever (seen as a hung broker kill in the suite). So the shutdown
        runs as a task, and while it is not done every reader that is being cancelled but still runs is
        cancelled again, for at most `_STOP_TIMEOUT_S`."""
        broker, self._broker = self._broker, None
        if broker is None:
            return
        shutdown = asyncio.ensure_future(broker.shutdown())
        deadline = asyncio.get_running_loop().time() + _STOP_TIMEOUT_S
        while not shutdown.done():
            done, _ = await asyncio.wait({shutdown}, timeout=_RECANCEL_EVERY_S)
            if done:
                break
            for task in asyncio.all_tasks():
                name = getattr(task.get_coro(), "__qualname__", "")
                if name.endswith("_reader_loop") and task.cancelling() and not task.done():
                    task.cancel()
            if asyncio.get_running_loop().time() > deadline:
                shutdown.cancel()
                _log.error("the embedded broker did not shut down within %s s", _STOP_TIMEOUT_S)
                break
        with contextlib.suppress(asyncio.CancelledError):
            await shutdown

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def __repr__(self) -> str:
        mode = "secured" if self.secured else "open"
        return f"EmbeddedBroker({self.host}:{self.port}, app_port={self.app_port}, {mode}, running={self.running})"
