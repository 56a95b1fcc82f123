"""The broker a sandbox runs on: a real Mosquitto, the embedded (amqtt) broker, or one somebody else runs.

    broker = SimBroker.open(BrokerKind.MOSQUITTO, directory=tmp / "broker", pki=FleetPKI(tmp / "pki"))
    try:
        ...   # broker.host, broker.port, broker.device_tls("cloud"), await broker.new_app_login()
    finally:
        broker.close()

A broker the harness starts lives in an event loop of its own (`LoopThread`), so one broker can serve every test
of a session whatever event loop each test runs in, and `close()` works from synchronous teardown code.
Mosquitto and the embedded broker get the tcu-sim configuration: mutual TLS for devices (certificates from the
fleet PKI), an app listener with per-app logins, and the ACLs. An external broker is used as it is:
`mqtt://[user:password@]host:port` (plain), or `mqtts://host:port` with the fleet PKI that issued its
certificates.
"""

from __future__ import annotations

import contextlib
import errno
import secrets
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import aiomqtt

from broker.launch import BrokerKind
from broker.mosquitto import AclPolicy, Grant, MosquittoBroker, MosquittoError, free_ports
from broker.pki import FleetPKI, cloud_identity

from ._errors import HarnessSetupError, NotSupported
from ._loopthread import LoopThread

if TYPE_CHECKING:
    from broker.embedded import EmbeddedBroker

__all__ = ["AppLogin", "BrokerKind", "SimBroker"]

_APP_POOL = 8  # app logins created with the broker; Mosquitto adds more on demand (a reload), amqtt cannot
_CLOUD_POOL = AclPolicy().clouds  # cloud identities the generated ACLs know: cloud, cloud-2, ...


@dataclass(frozen=True, slots=True)
class AppLogin:
    """An MQTT login for one app client (the password is a test credential; it is never shown in a repr)."""

    username: str
    password: str | None = field(repr=False)


class SimBroker:
    """A broker for tests and scripts; build one with `SimBroker.open(...)` and release it with `close()`.

    `host`/`port` is the device listener (cars, cloud), `app_host`/`app_port` where apps log in. `tls` says
    whether devices use mutual TLS with certificates of `pki`. `mqtt_version` is what every client of this
    broker should speak ("3.1.1" for the embedded broker, which has no MQTT 5). `shared` is True when the
    broker outlives one sandbox (several tests use it, or it is external): sandboxes on it then keep to their
    own cars and apps.
    """

    kind: BrokerKind

    def __init__(
        self,
        *,
        host: str,
        port: int,
        tls: bool,
        app_host: str,
        app_port: int,
        app_tls: bool,
        pki: FleetPKI | None,
        topic_prefix: str = "",
        mqtt_version: str = "5",
        shared: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.app_host = app_host
        self.app_port = app_port
        self.app_tls = app_tls
        self.pki = pki
        self.topic_prefix = topic_prefix
        self.mqtt_version = mqtt_version
        self.shared = shared
        self._apps_made = 0
        self._clouds_held: set[str] = set()
        self.closed = False

    # --- construction
    @staticmethod
    def open(
        kind: BrokerKind | str,
        *,
        directory: Path | None = None,
        pki: FleetPKI | None = None,
        url: str | None = None,
        topic_prefix: str = "",
        shared: bool = False,
        binary: Path | None = None,
        start_timeout: float = 10.0,
    ) -> SimBroker:
        """Start (or, for `external`, describe) a broker. Raises HarnessSetupError saying what to fix."""
        kind = BrokerKind(kind)
        if kind is BrokerKind.EXTERNAL:
            if url is None:
                raise HarnessSetupError("an external broker needs its URL (mqtt://host:port or mqtts://host:port)")
            return ExternalBroker.from_url(url, pki=pki, topic_prefix=topic_prefix)
        if directory is None or pki is None:
            raise HarnessSetupError(f"a {kind} broker needs a directory and a fleet PKI")
        if kind is BrokerKind.MOSQUITTO:
            return MosquittoSimBroker.start_new(
                directory, pki, topic_prefix=topic_prefix, shared=shared, binary=binary, start_timeout=start_timeout
            )
        return EmbeddedSimBroker.start_new(pki, topic_prefix=topic_prefix, shared=shared, start_timeout=start_timeout)

    # --- addresses and credentials
    @property
    def url(self) -> str:
        """The device listener as a URL (`mqtts://127.0.0.1:41234`)."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    @property
    def app_url(self) -> str:
        """The app listener as a URL (no login in it)."""
        return f"{'mqtts' if self.app_tls else 'mqtt'}://{self.app_host}:{self.app_port}"

    @property
    def protocol(self) -> aiomqtt.ProtocolVersion:
        """The aiomqtt protocol version for clients of this broker."""
        return aiomqtt.ProtocolVersion.V5 if self.mqtt_version == "5" else aiomqtt.ProtocolVersion.V311

    def device_tls(self, identity: str) -> ssl.SSLContext | None:
        """The TLS context for a device identity (a VIN, `cloud`, `operator`), its certificate issued when
        missing; None when devices connect without TLS."""
        if not self.tls:
            return None
        assert self.pki is not None  # a TLS device listener always comes with its PKI
        self.pki.ensure(identity)
        return self.pki.client_ssl_context(identity)

    @contextlib.contextmanager
    def lease_cloud(self) -> Iterator[str]:
        """A cloud identity (`cloud`, `cloud-2`, ...) no other cloud holds on this broker, for the life of the
        `with` block: the broker forces the client id to the certificate's CN (SPEC §7), so two clouds sharing one
        certificate would disconnect each other. With a PKI the lease holds across processes (pytest workers on
        one external broker: `FleetPKI.lease_cloud`)."""
        if not self.tls:
            # No certificates here, so no identity to match: a client id of its own (other processes' clouds
            # may share this broker).
            yield f"cloud-{secrets.token_hex(4)}"
            return
        if self.pki is not None:
            with self.pki.lease_cloud(_CLOUD_POOL) as name:
                yield name
            return
        for index in range(1, _CLOUD_POOL + 1):
            name = cloud_identity(index)
            if name in self._clouds_held:
                continue
            self._clouds_held.add(name)
            try:
                yield name
            finally:
                self._clouds_held.discard(name)
            return
        raise HarnessSetupError(f"all {_CLOUD_POOL} cloud identities of this broker are in use")

    def app_tls_context(self) -> ssl.SSLContext | None:
        """The TLS context apps use (trusting the fleet CA), or None for a plain app listener."""
        if not self.app_tls:
            return None
        if self.pki is not None:
            return self.pki.client_ssl_context(None)
        return ssl.create_default_context()

    def client(self, identity: str, *, identifier: str | None = None, **kwargs: Any) -> aiomqtt.Client:
        """An aiomqtt client on the device listener as `identity` (client id = identity unless given)."""
        kwargs.setdefault("protocol", self.protocol)
        kwargs.setdefault("timeout", 5.0)
        return aiomqtt.Client(
            self.host,
            self.port,
            identifier=identifier if identifier is not None else identity,
            tls_context=self.device_tls(identity),
            **kwargs,
        )

    async def new_app_login(self) -> AppLogin:
        """A fresh app login nobody else on this broker uses."""
        self._apps_made += 1
        return await self._app_login(self._apps_made)

    async def _app_login(self, number: int) -> AppLogin:
        raise NotImplementedError

    # --- control (faults)
    @property
    def controllable(self) -> bool:
        """True when the harness runs this broker and can stop, kill and start it."""
        return False

    @property
    def running(self) -> bool:
        """True while the broker accepts connections (as far as the harness knows)."""
        return not self.closed

    async def stop(self) -> None:
        """Stop the broker cleanly (Mosquitto saves its persistence file)."""
        raise NotSupported(f"{self!r}: the harness does not run this broker, so it cannot stop it")

    async def kill(self) -> None:
        """Kill the broker (a crash: what was not saved is lost)."""
        raise NotSupported(f"{self!r}: the harness does not run this broker, so it cannot kill it")

    async def start(self) -> None:
        """Start the broker again on the same ports."""
        raise NotSupported(f"{self!r}: the harness does not run this broker, so it cannot start it")

    async def restart(self) -> None:
        """stop() then start()."""
        await self.stop()
        await self.start()

    async def grant(self, named: Mapping[str, tuple[Grant, ...]]) -> None:
        """Give extra certificate identities ACL rights (an attacker's wiretap and clones: `attack_grants`)."""
        raise NotSupported(f"{self!r}: the harness cannot change this broker's ACL")

    def log_tail(self, lines: int = 20) -> str:
        """The end of the broker's log, for failure messages ("" when there is none)."""
        return ""

    def close(self) -> None:
        """Stop the broker and release what it holds (idempotent)."""
        self.closed = True

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("running" if self.running else "stopped")
        return f"{type(self).__name__}({self.url}, apps {self.app_url}, {state})"


class MosquittoSimBroker(SimBroker):
    """A real Mosquitto child process with the generated tcu-sim configuration (see `MosquittoBroker`)."""

    kind = BrokerKind.MOSQUITTO

    def __init__(self, thread: LoopThread, broker: MosquittoBroker, *, shared: bool, pool: int) -> None:
        assert broker.app_port is not None  # started with an app listener
        super().__init__(
            host=broker.host,
            port=broker.port,
            tls=True,
            app_host=broker.host,
            app_port=broker.app_port,
            app_tls=broker.app_tls,
            pki=broker.pki,
            topic_prefix=broker.topic_prefix,
            mqtt_version="5",
            shared=shared,
        )
        self._thread = thread
        self.mosquitto = broker
        self._pool = pool

    @classmethod
    def start_new(
        cls,
        directory: Path,
        pki: FleetPKI,
        *,
        topic_prefix: str,
        shared: bool,
        binary: Path | None,
        start_timeout: float,
    ) -> MosquittoSimBroker:
        users = [f"app-{n}" for n in range(1, _APP_POOL + 1)]
        thread = LoopThread(f"tcu-sim-mosquitto[{directory.name}]")
        broker = MosquittoBroker(
            directory, pki, app_users=users, topic_prefix=topic_prefix, binary=binary, start_timeout=start_timeout
        )
        try:
            thread.call(broker.start(), timeout=start_timeout * 3 + 5)
        except (MosquittoError, TimeoutError) as exc:
            with contextlib.suppress(Exception):
                thread.call(broker.stop(), timeout=10)
            thread.close()
            raise HarnessSetupError(f"Mosquitto did not start: {exc}") from None
        return cls(thread, broker, shared=shared, pool=len(users))

    async def _app_login(self, number: int) -> AppLogin:
        username = f"app-{number}"
        if number > self._pool:
            await self._thread.run(self.mosquitto.add_app_user(username))
        return AppLogin(username, self.mosquitto.app_password(username))

    @property
    def controllable(self) -> bool:
        return not self.closed

    @property
    def running(self) -> bool:
        return self.mosquitto.running

    async def stop(self) -> None:
        await self._thread.run(self.mosquitto.stop())

    async def kill(self) -> None:
        await self._thread.run(self.mosquitto.kill())

    async def start(self) -> None:
        await self._thread.run(self.mosquitto.start())

    async def save(self) -> None:
        """Make Mosquitto write its persistence file now (so a following kill() loses nothing)."""
        await self._thread.run(self.mosquitto.save())

    async def grant(self, named: Mapping[str, tuple[Grant, ...]]) -> None:
        """Mosquitto rewrites its ACL and reloads it."""
        await self._thread.run(self.mosquitto.grant(named))

    def log_tail(self, lines: int = 20) -> str:
        return self.mosquitto.log_tail(lines)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            if self._thread.alive:
                self._thread.call(self.mosquitto.stop(), timeout=15)
        except BaseException:
            self.mosquitto.kill_now()  # never leave a broker behind
            raise
        finally:
            self._thread.close()


class EmbeddedSimBroker(SimBroker):
    """The embedded (amqtt) broker in secured mode: mutual TLS, app logins and the same ACL policy, MQTT 3.1.1
    only, no persistence (a stop loses sessions and retained messages)."""

    kind = BrokerKind.EMBEDDED

    def __init__(
        self, thread: LoopThread, broker: EmbeddedBroker, passwords: dict[str, str], *, shared: bool
    ) -> None:
        assert broker.pki is not None  # started secured
        assert broker.app_port is not None  # with an app listener
        super().__init__(
            host=broker.host,
            port=broker.port,
            tls=True,
            app_host=broker.host,
            app_port=broker.app_port,
            app_tls=broker.app_tls,
            pki=broker.pki,
            topic_prefix=broker.policy.prefix,
            mqtt_version="3.1.1",
            shared=shared,
        )
        self._thread = thread
        self.embedded = broker
        self._passwords = passwords

    @classmethod
    def start_new(cls, pki: FleetPKI, *, topic_prefix: str, shared: bool, start_timeout: float) -> EmbeddedSimBroker:
        from broker.embedded import EmbeddedBroker  # amqtt is slow to import: only when the embedded broker runs

        passwords = {f"app-{n}": secrets.token_urlsafe(18) for n in range(1, _APP_POOL + 1)}
        thread = LoopThread("tcu-sim-embedded-broker")
        last: BaseException | None = None
        for _attempt in range(3):  # another process may take a picked port before the broker binds it
            port, app_port = free_ports("127.0.0.1", 2)
            broker = EmbeddedBroker(
                "127.0.0.1", port, pki=pki, app_port=app_port, app_users=passwords, topic_prefix=topic_prefix
            )
            try:
                thread.call(broker.start(), timeout=start_timeout)
            except OSError as exc:
                last = exc
                if exc.errno == errno.EADDRINUSE:
                    continue
                break
            except Exception as exc:  # amqtt wraps bind errors in its own exceptions
                last = exc
                continue
            return cls(thread, broker, passwords, shared=shared)
        thread.close()
        raise HarnessSetupError(f"the embedded broker did not start: {last}")

    async def _app_login(self, number: int) -> AppLogin:
        username = f"app-{number}"
        if username not in self._passwords:
            raise NotSupported(
                f"the embedded broker has {len(self._passwords)} app logins and cannot add more while it runs; "
                "use fewer app users per broker, or Mosquitto"
            )
        return AppLogin(username, self._passwords[username])

    @property
    def controllable(self) -> bool:
        return not self.closed

    @property
    def running(self) -> bool:
        return self.embedded.running

    async def stop(self) -> None:
        await self._thread.run(self.embedded.stop())

    async def kill(self) -> None:
        await self.stop()  # in-process: nothing is persisted, so a kill and a stop lose the same

    async def start(self) -> None:
        await self._thread.run(self.embedded.start())

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            if self._thread.alive:
                self._thread.call(self.embedded.stop(), timeout=15)
        finally:
            self._thread.close()


class ExternalBroker(SimBroker):
    """A broker somebody else runs (a CI service container, a shared test broker). Sandboxes on it keep to a
    topic prefix of their own, and apps log in with the URL's credentials (one app at a time per login on a
    broker with per-user ACLs)."""

    kind = BrokerKind.EXTERNAL

    def __init__(
        self,
        *,
        host: str,
        port: int,
        tls: bool,
        pki: FleetPKI | None,
        topic_prefix: str,
        username: str | None,
        password: str | None,
    ) -> None:
        super().__init__(
            host=host,
            port=port,
            tls=tls,
            app_host=host,
            app_port=port,
            app_tls=tls,
            pki=pki,
            topic_prefix=topic_prefix,
            mqtt_version="3.1.1",  # the one version every broker speaks
            shared=True,
        )
        self.username = username
        self._password = password

    @classmethod
    def from_url(cls, url: str, *, pki: FleetPKI | None, topic_prefix: str) -> ExternalBroker:
        """Parse `mqtt://[user:password@]host[:port]` or `mqtts://host[:port]` (the latter needs `pki`)."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise HarnessSetupError(
                f"--tcu-broker {url!r}: expected mosquitto, embedded, auto, mqtt://host:port or mqtts://host:port"
            )
        tls = parts.scheme == "mqtts"
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError:
            raise HarnessSetupError(f"--tcu-broker {url!r}: bad port") from None
        if tls and pki is None:
            raise HarnessSetupError(
                f"--tcu-broker {url!r}: an mqtts:// broker needs the fleet PKI that issued its certificates "
                "(--tcu-broker-pki DIR, the directory of `tcu-sim pki init`), or use mqtt://"
            )
        return cls(
            host=parts.hostname,
            port=port,
            tls=tls,
            pki=pki,
            topic_prefix=topic_prefix,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    async def _app_login(self, number: int) -> AppLogin:
        if self.username is not None:
            return AppLogin(self.username, self._password)
        return AppLogin(f"app-{secrets.token_hex(4)}-{number}", None)

    def client(self, identity: str, *, identifier: str | None = None, **kwargs: Any) -> aiomqtt.Client:
        if not self.tls and self.username is not None:
            kwargs.setdefault("username", self.username)
            kwargs.setdefault("password", self._password)
        return super().client(identity, identifier=identifier, **kwargs)

    @property
    def credentials(self) -> tuple[str | None, str | None]:
        """The login devices and the cloud use on a plain external broker (from the URL)."""
        return (self.username, self._password) if not self.tls else (None, None)
