"""One MQTT connection per car, many cars per event loop.

A fleet process holds thousands of TLS connections. aiomqtt gives each client its own housekeeping task that wakes
every second; with 10,000 cars that alone costs a large share of a core. Here every connection is a plain paho
client driven by the asyncio loop through socket callbacks (the same integration aiomqtt uses), and one shared
`LinkPool` task does the keepalive housekeeping for all of them in slices. Sockets get TCP_NODELAY so that small
MQTT packets are not held back by Nagle's algorithm.

paho's `reconnect()` blocks for the TCP connect and the TLS handshake, so it runs in one of the pool's own
handshake threads (as many as handshakes may run at once; asyncio's default executor has only cpu+4 threads,
which bounded a 2-core fleet to 6 handshakes in flight while each mostly waits for the broker); a semaphore
bounds how many handshakes run at once (the connect rate of a reconnect storm).

Memory: an `ssl.SSLContext` costs about 26 KiB (OpenSSL's SSL_CTX with the CA store and the key pair), more than
the rest of a car's Python state. A link given a `ClientCertificate` instead of a context therefore has no
context of its own: the pool keeps one context per CA and loads the car's certificate into it right before the
connection is created. OpenSSL copies the certificate and key into each connection when it creates it (SSL_new),
and "changes applied to ctx do not propagate to already existing SSL objects" (SSL_CTX_use_certificate(3)), so
the next car's certificate loaded into the same context leaves the established connection's identity alone;
loading and SSL_new happen under one lock (`LinkPool.wrap_for`), the handshakes outside it. (CPython already
sets SSL_MODE_RELEASE_BUFFERS on every context: an idle connection holds no read or write buffer.)

Reconnects resume TLS: a link keeps its connection's `ssl.SSLSession` when the connection closes (with TLS 1.3
the broker's ticket arrives after the handshake) and offers it on the next connect. A resumed handshake skips
the certificate exchange and the signatures; the broker keeps the client identity the session was made with
(the car's own certificate: a session is only ever offered by the link that made it), so its ACLs still apply.
Sessions are only accepted by the context that made them, hence one context per CA for all handshake threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from tcu_sim._net import set_nodelay

__all__ = ["BrokerAddress", "ClientCertificate", "LinkCallbacks", "LinkPool", "MqttLink"]

log = structlog.get_logger("tcu_sim.transport")


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where and how a car connects. `tls` is None for a plain TCP listener."""

    host: str
    port: int
    tls: ssl.SSLContext | None = None
    keepalive_s: int = 60
    connect_timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    """A client's mutual-TLS identity as files: the CA it trusts, its certificate and its private key.

    Given to `MqttLink(tls=...)` instead of an `ssl.SSLContext`, it is loaded into a context shared by the
    pool's handshake threads for each handshake only (see the module docstring), which saves each car its own
    context. Server certificate and host name are verified as with `ssl.create_default_context`.
    """

    ca_cert: str | Path
    cert: str | Path
    key: str | Path


class _CertificateTls:
    """What paho sees as its SSL context for a link with a `ClientCertificate` (paho calls only `wrap_socket`
    and reads `check_hostname`): the pool's shared context for the CA, with this car's certificate loaded, and
    this car's last TLS session offered for resumption."""

    __slots__ = ("_identity", "_pool", "session")

    check_hostname = True  # the shared contexts check the host name (paho then skips its own check)

    def __init__(self, pool: LinkPool, identity: ClientCertificate) -> None:
        self._pool = pool
        self._identity = identity
        #: This car's last TLS session (kept when its connection closes), offered on the next connect.
        self.session: ssl.SSLSession | None = None

    def wrap_socket(self, sock: socket.socket, **kwargs: Any) -> ssl.SSLSocket:
        return self._pool.wrap_for(self._identity, sock, self.session, **kwargs)


@dataclass(slots=True)
class LinkCallbacks:
    """What a link reports to its owner; all are called on the event loop thread."""

    on_connected: Callable[[bool], None]  # argument: session_present
    on_disconnected: Callable[[str], None]  # argument: reason
    on_message: Callable[[str, bytes], None]
    on_published: Callable[[int], None]  # argument: message id, once the broker acknowledged it
    on_subscribed: Callable[[int], None] = lambda _mid: None  # argument: message id of the SUBSCRIBE


class MqttLink:
    """One car's MQTT connection: connect, publish, subscribe, and report what happens through callbacks."""

    __slots__ = ("_callbacks", "_client", "_closing", "_pool", "_sock", "_tls", "client_id", "connected", "tls_resumed")

    def __init__(
        self,
        pool: LinkPool,
        client_id: str,
        callbacks: LinkCallbacks,
        *,
        clean_session: bool = False,
        will: tuple[str, bytes] | None = None,
        tls: ssl.SSLContext | ClientCertificate | None = None,
        username: str | None = None,
        password: str | None = None,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self._pool = pool
        self.client_id = client_id
        self._callbacks = callbacks
        self._closing = False
        self._sock: Any = None
        self._tls: _CertificateTls | None = None
        self.connected = False
        #: Whether the last TLS handshake resumed the car's previous session (no certificate exchange, no
        #: key exchange signature: the broker keeps the identity the session was made with).
        self.tls_resumed = False
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean_session,
            protocol=mqtt.MQTTv311,
        )
        client.connect_timeout = connect_timeout_s
        # The outbox above this layer is the queue; paho must never silently drop or hold an unbounded backlog.
        client.max_inflight_messages_set(100)
        client.max_queued_messages_set(0)
        if isinstance(tls, ClientCertificate):
            # paho types its context as ssl.SSLContext but only calls wrap_socket() and reads check_hostname.
            self._tls = _CertificateTls(pool, tls)
            client.tls_set_context(cast(ssl.SSLContext, self._tls))
        elif tls is not None:
            client.tls_set_context(tls)
        if username is not None:
            client.username_pw_set(username, password)
        if will is not None:
            client.will_set(will[0], will[1], qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        self._client = client

    def __repr__(self) -> str:
        return f"MqttLink(client_id={self.client_id!r}, connected={self.connected})"

    # --- public API -------------------------------------------------------------------------------------------

    async def connect(self, address: BrokerAddress, *, prepare: Callable[[], None] | None = None) -> None:
        """Open the TCP/TLS connection and send CONNECT; `on_connected` fires when the CONNACK arrives.

        `prepare` runs first, in the same handshake thread (blocking work the connection needs done, such as
        a file write, kept off the event loop). Raises OSError (including ssl.SSLError) when the broker cannot
        be reached or refuses the handshake.
        """
        self._closing = False
        self._client.connect_async(address.host, address.port, keepalive=address.keepalive_s)
        reconnect = self._client.reconnect
        if prepare is None:
            await self._pool.run_handshake(reconnect)
            return

        def prepare_and_reconnect() -> MQTTErrorCode:
            prepare()
            return reconnect()

        await self._pool.run_handshake(prepare_and_reconnect)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> int | None:
        """Queue a publish; returns its message id, or None if the connection is not up."""
        if not self.connected:
            return None
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return None
        return info.mid

    def subscribe(self, topics: list[str], qos: int = 1) -> int | None:
        """Subscribe to the given topic filters; returns the message id `on_subscribed` will report (None if down)."""
        if not (self.connected and topics):
            return None
        rc, mid = self._client.subscribe([(t, qos) for t in topics])
        return mid if rc == MQTTErrorCode.MQTT_ERR_SUCCESS else None

    def disconnect(self) -> None:
        """Close cleanly (DISCONNECT packet, so the broker does not fire the last will)."""
        self._closing = True
        if self._sock is not None:
            self._client.disconnect()

    def drop(self) -> None:
        """Close the socket without DISCONNECT, as a car losing its network does: the broker fires the last will."""
        self._closing = True
        sock = self._sock
        if sock is not None:
            self._keep_session(sock)
            self._pool.unwatch(sock)
            self._sock = None
            with contextlib.suppress(OSError):
                sock.close()
            self._client._sock = None  # paho has no public "abort": it must forget the dead socket
        self._mark_disconnected("dropped")

    def housekeeping(self) -> None:
        """Keepalive pings and timeouts; the pool calls this about once a second."""
        if self._sock is not None:
            rc = self._client.loop_misc()
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS and self.connected:
                self._mark_disconnected(f"keepalive: {rc.name}")

    # --- paho callbacks (event loop thread, except socket_open which comes from the handshake thread) ----------

    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._sock = sock
        self._pool.call_threadsafe(self._watch_socket, sock)

    def _watch_socket(self, sock: Any) -> None:
        if self._sock is not sock:
            return
        set_nodelay(sock)
        self.tls_resumed = bool(getattr(sock, "session_reused", False))
        if self._tls is not None:
            self._tls.session = None  # used; the connection's own session is kept when it closes
        self._pool.watch_read(sock, self._readable)

    def _keep_session(self, sock: Any) -> None:
        """Keep the TLS session of a connection about to close, for the next connect (TLS 1.3: the broker's
        ticket arrives after the handshake, so it is taken at the end, not the start)."""
        if self._tls is None or not isinstance(sock, ssl.SSLSocket):
            return
        with contextlib.suppress(OSError, ValueError, AttributeError):
            session = sock.session
            if session is not None and (session.has_ticket or session.id):
                self._tls.session = session

    def _on_socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._keep_session(sock)
        self._pool.unwatch(sock)
        if self._sock is sock:
            self._sock = None

    def _on_register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        if self._pool.on_loop_thread():
            self._pool.watch_write(sock, self._writable)
        else:
            self._pool.call_threadsafe(self._pool.watch_write, sock, self._writable)

    def _on_unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._pool.unwatch_write(sock)

    def _readable(self) -> None:
        while True:
            rc = self._client.loop_read(max_packets=10)
            if rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_AGAIN):
                self._mark_disconnected(f"read: {rc.name}")
                return
            # TLS may hold decrypted bytes the kernel no longer signals as readable: drain them now.
            sock = self._sock
            if not (isinstance(sock, ssl.SSLSocket) and sock.pending() > 0):
                return

    def _writable(self) -> None:
        rc = self._client.loop_write()
        if rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_AGAIN):
            self._mark_disconnected(f"write: {rc.name}")
        elif not self._client.want_write() and self._sock is not None:
            # paho's unregister callback can race the deferred register from the handshake thread; never spin.
            self._pool.unwatch_write(self._sock)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self._mark_disconnected(f"refused: {reason}")
            return
        self.connected = True
        self._callbacks.on_connected(bool(flags.session_present))

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._mark_disconnected(str(reason))

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._callbacks.on_message(message.topic, bytes(message.payload))

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        self._callbacks.on_published(mid)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        self._callbacks.on_subscribed(mid)

    def _mark_disconnected(self, reason: str) -> None:
        sock = self._sock
        if sock is not None:
            self._keep_session(sock)
            self._pool.unwatch(sock)
            self._sock = None
            with contextlib.suppress(OSError):
                sock.close()
            self._client._sock = None  # see drop()
        was_connected = self.connected
        self.connected = False
        if was_connected or not self._closing:
            self._callbacks.on_disconnected(reason)


class LinkPool:
    """Drives many `MqttLink`s on one asyncio loop: socket watching, bounded handshakes, shared housekeeping."""

    def __init__(self, *, max_concurrent_handshakes: int = 32, housekeeping_interval_s: float = 1.0) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._max_handshakes = max_concurrent_handshakes
        self._handshakes = asyncio.Semaphore(max_concurrent_handshakes)
        self._executor: ThreadPoolExecutor | None = None
        self._contexts: dict[str | Path, ssl.SSLContext] = {}  # CA path -> the client context shared by all cars
        self._tls_lock = threading.Lock()  # one certificate loaded and copied into a connection at a time
        self._interval = housekeeping_interval_s
        self._links: list[MqttLink] = []
        self._task: asyncio.Task[None] | None = None
        self._readers: set[int] = set()
        self._writers: set[int] = set()

    def __repr__(self) -> str:
        return f"LinkPool(links={len(self._links)}, sockets={len(self._readers)})"

    async def __aenter__(self) -> LinkPool:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._executor = ThreadPoolExecutor(max_workers=self._max_handshakes, thread_name_prefix="link_pool.handshake")
        self._task = asyncio.create_task(self._housekeeping(), name="link_pool.housekeeping")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for link in list(self._links):
            link.drop()
        self._links.clear()
        if self._executor is not None:
            # A handshake still running ends by its own connect timeout; the loop need not wait for it.
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("LinkPool is not started; use `async with LinkPool() as pool`")
        return self._loop

    def link(self, client_id: str, callbacks: LinkCallbacks, **kwargs: Any) -> MqttLink:
        """Create a link driven by this pool."""
        link = MqttLink(self, client_id, callbacks, **kwargs)
        self._links.append(link)
        return link

    def forget(self, link: MqttLink) -> None:
        """Stop driving a link (after it was dropped or disconnected for good)."""
        with contextlib.suppress(ValueError):
            self._links.remove(link)

    async def run_handshake(self, func: Callable[[], Any]) -> None:
        async with self._handshakes:
            rc = await self.loop.run_in_executor(self._executor, func)
        if rc not in (None, MQTTErrorCode.MQTT_ERR_SUCCESS):
            raise OSError(f"MQTT connect failed: {rc}")

    def handshake_context(self, ca_cert: str | Path) -> ssl.SSLContext:
        """The shared client context trusting `ca_cert` (see `ClientCertificate`); change it only under
        `wrap_for`'s lock."""
        context = self._contexts.get(ca_cert)
        if context is None:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_cert))
            context = self._contexts.setdefault(ca_cert, context)
        return context

    def wrap_for(
        self, identity: ClientCertificate, sock: socket.socket, session: ssl.SSLSession | None, **kwargs: Any
    ) -> ssl.SSLSocket:
        """`sock` wrapped for `identity` by the shared context (no handshake yet: paho asks for it apart), with
        `session` offered for resumption. The certificate is loaded and copied into the connection (SSL_new)
        under a lock, so that two handshake threads never mix their cars' certificates; the handshakes
        themselves run outside it, at once. One context per CA for all threads is what lets a car resume: a
        session is only accepted by the context that made it."""
        with self._tls_lock:
            context = self.handshake_context(identity.ca_cert)
            context.load_cert_chain(identity.cert, identity.key)
            if session is not None:
                with contextlib.suppress(ValueError):  # a session of another context: a full handshake
                    return context.wrap_socket(sock, session=session, **kwargs)
            return context.wrap_socket(sock, **kwargs)

    def on_loop_thread(self) -> bool:
        return threading.get_ident() == self._loop_thread

    def call_threadsafe(self, func: Callable[..., None], *args: Any) -> None:
        self.loop.call_soon_threadsafe(func, *args)

    def watch_read(self, sock: Any, callback: Callable[[], None]) -> None:
        fd = sock.fileno()
        if fd >= 0:
            self.loop.add_reader(fd, callback)
            self._readers.add(fd)

    def watch_write(self, sock: Any, callback: Callable[[], None]) -> None:
        fd = sock.fileno()
        if fd >= 0:
            self.loop.add_writer(fd, callback)
            self._writers.add(fd)

    def unwatch_write(self, sock: Any) -> None:
        fd = sock.fileno()
        if fd in self._writers:
            self._writers.discard(fd)
            if self._loop is not None:
                self._loop.remove_writer(fd)

    def unwatch(self, sock: Any) -> None:
        try:
            fd = sock.fileno()
        except OSError:
            return
        if fd < 0 or self._loop is None:
            return
        if fd in self._readers:
            self._readers.discard(fd)
            self._loop.remove_reader(fd)
        if fd in self._writers:
            self._writers.discard(fd)
            self._loop.remove_writer(fd)

    async def _housekeeping(self) -> None:
        # Links are visited in ten slices per interval so that 10,000 keepalive checks never block the loop at once.
        slices = 10
        index = 0
        while True:
            await asyncio.sleep(self._interval / slices)
            links = self._links
            if not links:
                continue
            step = max(1, len(links) // slices + 1)
            for link in links[index : index + step]:
                try:
                    link.housekeeping()
                except Exception:  # one broken link must not stop keepalives for the fleet
                    log.exception("link housekeeping failed", client_id=link.client_id)
            index = index + step if index + step < len(links) else 0
