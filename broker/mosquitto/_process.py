"""A Mosquitto child process with the tcu-sim configuration: generated config, fleet PKI, free loopback ports.

    async with MosquittoBroker(directory, pki) as broker:
        async with broker.client(vin) as car:              # mutual TLS as the car (CN = VIN)
            await car.publish(f"tcu/{vin}/status", b"...", qos=1)

The one launcher of Mosquitto: `tcu-sim up`, scenarios and the bench start it, and the test harness re-exports
it. The broker runs with the configuration from `broker.mosquitto` (both listeners, ACLs, CRL, persistence in its
directory). Readiness is the broker's own "running" log line followed by a real MQTT connection, not a sleep.
Its log is kept (in memory and in `<directory>/mosquitto.log`) and quoted when it fails.
`stop()` (SIGTERM: saves the persistence file), `kill()` (SIGKILL) and `start()` again on the same ports allow
restarts; `reload()` (SIGHUP) re-reads ACLs, passwords and the CRL.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiomqtt

from broker.pki import FleetPKI
from tcu_sim._net import SOCKET_OPTIONS

from ._acl import AclPolicy, Grant
from ._config import LogType, MosquittoConfig, MosquittoFiles, write_config
from ._passwords import validate_app_username
from ._probe import ConnectOutcome, probe_connect

__all__ = ["MosquittoBroker", "MosquittoError", "MosquittoNotFound", "find_mosquitto", "free_ports"]

_SEARCH_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/opt/homebrew/sbin/mosquitto")
_RUNNING = re.compile(r"mosquitto version \S+ running")
_LOG_TAIL = 40
# The readiness and reload probes connect as their own identity: as the cloud, they would replace the cloud's
# connection (the broker forces the client id to the certificate's CN).
PROBE = "broker-probe"
_NOT_FOUND = "mosquitto not found: install it (apt-get install mosquitto) or set TCU_SIM_MOSQUITTO"


class MosquittoError(RuntimeError):
    """The broker did not start, stop or reload as asked; the message quotes the end of its log."""


class MosquittoNotFound(MosquittoError):
    """No mosquitto binary: install Mosquitto or set TCU_SIM_MOSQUITTO to its path."""

    def __init__(self, message: str = _NOT_FOUND) -> None:
        super().__init__(message)


def find_executable(name: str, env: str, search_paths: Iterable[str]) -> Path | None:
    """A server binary: the path in $`env` (None when that is not an executable file), then PATH, then
    `search_paths` (sbin directories are not on every PATH)."""
    configured = os.environ.get(env)
    if configured:
        path = Path(configured)
        return path if path.is_file() and os.access(path, os.X_OK) else None
    found = shutil.which(name)
    if found:
        return Path(found)
    return next((Path(c) for c in search_paths if os.access(c, os.X_OK)), None)


def find_mosquitto() -> Path | None:
    """The mosquitto binary: $TCU_SIM_MOSQUITTO, then PATH, then the usual sbin directories (not on every PATH)."""
    return find_executable("mosquitto", "TCU_SIM_MOSQUITTO", _SEARCH_PATHS)


def free_ports(host: str, count: int) -> list[int]:
    """`count` distinct ports that are free on `host` right now (held open together so they differ)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets = [socket.socket(family, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class MosquittoBroker:
    """A Mosquitto child process on loopback with the tcu-sim configuration (an async context manager).

    `port` is the device listener (mutual TLS: cars, cloud, operator); `app_port` the app listener (username +
    password, TLS unless `app_tls=False`). Ports given as 0 are picked free on the first start and kept for every
    restart. `app_users` are created with random passwords (or the given ones); `app_password(name)` tells them.
    """

    def __init__(
        self,
        directory: Path,
        pki: FleetPKI,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        app_port: int | None = 0,
        app_tls: bool = True,
        app_users: Mapping[str, str] | Iterable[str] = (),
        topic_prefix: str = "",
        policy: AclPolicy | None = None,
        persistence: bool = True,
        autosave_interval: int = 60,
        autosave_on_changes: bool = False,
        log_types: tuple[LogType, ...] = ("error", "warning", "notice", "information", "subscribe"),
        binary: Path | str | None = None,
        start_timeout: float = 10.0,
    ) -> None:
        self.directory = Path(directory).absolute()
        self.pki = pki
        self.host = host
        self.port = port
        self.app_port = app_port
        self.app_tls = app_tls
        self.topic_prefix = topic_prefix
        self.policy = policy if policy is not None else AclPolicy(topic_prefix)
        self.persistence = persistence
        self.autosave_interval = autosave_interval
        self.autosave_on_changes = autosave_on_changes
        self.log_types = log_types
        self.start_timeout = start_timeout
        self._binary = Path(binary) if binary is not None else None
        self._auto_ports = port == 0 or app_port == 0
        self._requested_ports = (port, app_port)
        passwords: dict[str, str]
        if isinstance(app_users, Mapping):
            passwords = {str(user): str(password) for user, password in app_users.items()}
        else:
            passwords = {user: secrets.token_urlsafe(18) for user in app_users}
        for user in passwords:
            validate_app_username(user)
        self._app_passwords = passwords
        self._files: MosquittoFiles | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._log_lines: list[str] = []
        self._log_changed = asyncio.Condition()
        self.starts = 0

    # --- paths and state
    @property
    def files(self) -> MosquittoFiles:
        """The generated configuration files (after the first start)."""
        if self._files is None:
            raise MosquittoError("the broker has not been started yet")
        return self._files

    @property
    def ca_cert(self) -> Path:
        """The fleet CA certificate every client trusts."""
        return self.pki.ca_cert_path

    @property
    def log_path(self) -> Path:
        """The broker's log, appended across restarts."""
        return self.directory / "mosquitto.log"

    @property
    def plain_port(self) -> int | None:
        """The app listener's port when it is plaintext (`app_tls=False`), else None."""
        return self.app_port if not self.app_tls else None

    @property
    def running(self) -> bool:
        """True while the broker process is alive."""
        return self._process is not None and self._process.returncode is None

    @property
    def pid(self) -> int | None:
        """The process id while running."""
        return self._process.pid if self.running and self._process is not None else None

    def app_password(self, username: str) -> str:
        """The password of app user `username` (random unless one was given)."""
        return self._app_passwords[username]

    @property
    def app_users(self) -> tuple[str, ...]:
        """The app usernames in the password file."""
        return tuple(sorted(self._app_passwords))

    # --- lifecycle
    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self.stop()
        except BaseException:
            self.kill_now()  # never leave a broker behind, whatever interrupted the stop
            raise

    async def start(self) -> None:
        """Start the broker (again) and wait until it accepts an MQTT connection; MosquittoError if it does not."""
        if self.running:
            raise MosquittoError("the broker is already running")
        binary = self._binary or find_mosquitto()
        if binary is None:
            raise MosquittoNotFound
        attempts = 3 if self._auto_ports and self.starts == 0 else 1
        for attempt in range(1, attempts + 1):
            if self._files is None or (attempt > 1):
                self._write_config()
            try:
                await self._spawn_and_wait(binary)
            except _PortTaken:
                if attempt == attempts:
                    raise MosquittoError(f"ports {self.port}/{self.app_port} taken\n{self.log_tail()}") from None
                self.port, self.app_port = self._requested_ports  # pick the free ones again; keep given ones
                continue
            self.starts += 1
            return

    def _write_config(self) -> None:
        if self.port == 0 or self.app_port == 0:
            picked = free_ports(self.host, 2)
            self.port = self.port or picked[0]
            if self.app_port == 0:
                self.app_port = picked[1]
        self.pki.ensure_identity(PROBE)  # the readiness probe's own identity: the client id is the CN
        config = MosquittoConfig.from_pki(
            self.pki,
            host=self.host,
            port=self.port,
            app_port=self.app_port,
            app_tls=self.app_tls,
            topic_prefix=self.topic_prefix,
            persistence=self.persistence,
            autosave_interval=self.autosave_interval,
            autosave_on_changes=self.autosave_on_changes,
            log_types=self.log_types,
            # Run as whoever starts it: the keys are 0600, and root would otherwise drop to `mosquitto`.
            run_as_user=getpass.getuser(),
        )
        self._files = write_config(self.directory, config, policy=self.policy, app_users=self._app_passwords)

    async def _spawn_and_wait(self, binary: Path) -> None:
        mark = len(self._log_lines)
        self._process = await asyncio.create_subprocess_exec(
            str(binary),
            "-c",
            str(self.files.config),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._reader = asyncio.create_task(self._read_log(self._process), name=f"mosquitto[{self.port}].log")
        try:
            async with asyncio.timeout(self.start_timeout):
                running = asyncio.create_task(self.wait_for_log(_RUNNING, since=mark, timeout=None))
                exited = asyncio.create_task(self._process.wait())
                try:
                    await asyncio.wait({running, exited}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for task in (running, exited):
                        task.cancel()
                    await asyncio.gather(running, exited, return_exceptions=True)
                if self._process.returncode is not None:
                    await self._drain_reader()
                    if any("Address already in use" in line for line in self._log_lines[mark:]):
                        raise _PortTaken
                    raise MosquittoError(f"mosquitto exited with {self._process.returncode}\n{self.log_tail()}")
                outcome = await self.probe(PROBE)
                if not outcome.accepted:
                    raise MosquittoError(
                        f"mosquitto runs but refused the readiness probe ({outcome})\n{self.log_tail()}"
                    )
        except TimeoutError:
            self.kill_now()
            await self._drain_reader()
            raise MosquittoError(f"mosquitto not ready within {self.start_timeout} s\n{self.log_tail()}") from None
        except BaseException:
            self.kill_now()
            await self._drain_reader()
            raise

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (Mosquitto saves its persistence file) and wait for the exit; SIGKILL after `timeout`."""
        if not self.running:
            await self._drain_reader()
            return
        assert self._process is not None  # running implies a process
        self._process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout):
                await self._process.wait()
        except TimeoutError:
            self.kill_now()
            await self._process.wait()
        await self._drain_reader()

    async def kill(self) -> None:
        """SIGKILL: a crash. What was not yet saved (see `autosave_*`, `save()`) is lost."""
        self.kill_now()
        if self._process is not None:
            await self._process.wait()
        await self._drain_reader()

    async def restart(self) -> None:
        """stop() then start() on the same ports."""
        await self.stop()
        await self.start()

    async def reload(self, timeout: float = 5.0) -> None:
        """SIGHUP: re-read ACLs, passwords and the CRL; returns once Mosquitto has done so."""
        await self._signal_and_wait(signal.SIGHUP, re.compile(r"Reloading config"), timeout)

    async def save(self, timeout: float = 5.0) -> None:
        """SIGUSR1: write the persistence file now (so a following kill() loses nothing)."""
        await self._signal_and_wait(signal.SIGUSR1, re.compile(r"Saving in-memory database"), timeout)

    async def _signal_and_wait(self, signum: signal.Signals, pattern: re.Pattern[str], timeout: float) -> None:
        if not self.running or self._process is None:
            raise MosquittoError("the broker is not running")
        mark = len(self._log_lines)
        self._process.send_signal(signum)
        try:
            await self.wait_for_log(pattern, since=mark, timeout=timeout)
        except TimeoutError:
            raise MosquittoError(f"no {pattern.pattern!r} in the log after {signum.name}\n{self.log_tail()}") from None
        # Mosquitto logs first and then does the work, in its single-threaded main loop: once a new connection
        # has been answered, the reload or save is complete.
        outcome = await self.probe(PROBE)
        if not outcome.accepted:
            raise MosquittoError(f"broker unusable after {signum.name} ({outcome})\n{self.log_tail()}")

    async def revoke(self, name_or_serial: str | int) -> int:
        """Revoke a certificate in the PKI and reload the broker so it refuses new connections with it (an open
        connection stays open: Mosquitto checks certificates in the TLS handshake only)."""
        serial = self.pki.revoke(name_or_serial)
        if self.running:
            await self.reload()
        return serial

    async def grant(self, named: Mapping[str, tuple[Grant, ...]]) -> None:
        """Give named identities rights beyond the default policy (a test's or scenario's extra client, e.g. an
        attacker's wiretap); rewrites the ACL and reloads a running broker."""
        self.policy = replace(self.policy, named={**self.policy.named, **named})
        if self._files is not None:
            self._write_config()
            if self.running:
                await self.reload()

    async def add_app_user(self, username: str, password: str | None = None) -> str:
        """Add (or change) an app login; reloads a running broker. Returns the password."""
        validate_app_username(username)
        self._app_passwords[username] = password if password is not None else secrets.token_urlsafe(18)
        if self._files is not None:
            self._write_config()
            if self.running:
                await self.reload()
        return self._app_passwords[username]

    def kill_now(self) -> None:
        """SIGKILL without waiting (synchronous): the last resort of a teardown."""
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()

    # --- the log
    async def _read_log(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None  # created with a pipe
        with self.log_path.open("a", encoding="utf-8") as file:
            async for raw in process.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                file.write(line + "\n")
                file.flush()
                async with self._log_changed:
                    self._log_lines.append(line)
                    self._log_changed.notify_all()

    async def _drain_reader(self) -> None:
        if self._reader is not None:
            try:
                async with asyncio.timeout(5):
                    await self._reader
            except TimeoutError:
                self._reader.cancel()
            self._reader = None

    def log_lines(self) -> list[str]:
        """Every log line so far (all runs)."""
        return list(self._log_lines)

    def log_tail(self, lines: int = _LOG_TAIL) -> str:
        """The last `lines` lines of the log, for failure messages."""
        tail = self._log_lines[-lines:]
        return "--- mosquitto log (last lines) ---\n" + "\n".join(tail) if tail else "(mosquitto logged nothing)"

    def log_mark(self) -> int:
        """A position in the log; pass it as `since` to wait only for lines written after now."""
        return len(self._log_lines)

    async def wait_for_log(self, pattern: str | re.Pattern[str], *, since: int = 0, timeout: float | None = 5.0) -> str:
        """The first log line from position `since` on that matches `pattern`, waiting up to `timeout`."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        async with asyncio.timeout(timeout), self._log_changed:
            checked = since
            while True:
                for line in self._log_lines[checked:]:
                    if regex.search(line):
                        return line
                checked = len(self._log_lines)
                await self._log_changed.wait()

    # --- clients
    def ssl_context(self, identity: str | None = None) -> ssl.SSLContext:
        """A TLS context trusting the fleet CA, presenting `identity`'s certificate (None: no certificate)."""
        if identity is not None:
            self.pki.ensure(identity)
        return self.pki.client_ssl_context(identity)

    def tls_parameters(self, identity: str | None = None) -> aiomqtt.TLSParameters:
        """The same as `ssl_context`, as aiomqtt `TLSParameters` (file paths)."""
        if identity is None:
            return aiomqtt.TLSParameters(ca_certs=str(self.ca_cert))
        paths = self.pki.ensure(identity).paths
        return aiomqtt.TLSParameters(ca_certs=str(self.ca_cert), certfile=str(paths.cert), keyfile=str(paths.key))

    def client(
        self,
        identity: str,
        *,
        identifier: str | None = None,
        protocol: aiomqtt.ProtocolVersion = aiomqtt.ProtocolVersion.V5,
        timeout: float = 5.0,
        **kwargs: Any,
    ) -> aiomqtt.Client:
        """An aiomqtt client for the device listener, authenticated by `identity`'s certificate (issued if
        missing): a VIN, `cloud(-N)`, `operator(-N)` or a named identity. The client id defaults to the identity;
        another `identifier` is replaced by the identity on this listener (SPEC §7), so two clients with one
        identity disconnect each other."""
        kwargs.setdefault("socket_options", SOCKET_OPTIONS)
        return aiomqtt.Client(
            self.host,
            self.port,
            identifier=identifier if identifier is not None else identity,
            tls_context=self.ssl_context(identity),
            protocol=protocol,
            timeout=timeout,
            **kwargs,
        )

    def app_client(
        self,
        username: str,
        password: str | None = None,
        *,
        identifier: str | None = None,
        protocol: aiomqtt.ProtocolVersion = aiomqtt.ProtocolVersion.V5,
        timeout: float = 5.0,
        **kwargs: Any,
    ) -> aiomqtt.Client:
        """An aiomqtt client for the app listener, logged in as `username` (its password by default)."""
        if self.app_port is None:
            raise MosquittoError("this broker has no app listener")
        kwargs.setdefault("socket_options", SOCKET_OPTIONS)
        return aiomqtt.Client(
            self.host,
            self.app_port,
            username=username,
            password=password if password is not None else self._app_passwords.get(username, ""),
            identifier=identifier if identifier is not None else username,
            tls_context=self.ssl_context(None) if self.app_tls else None,
            protocol=protocol,
            timeout=timeout,
            **kwargs,
        )

    async def probe(
        self,
        identity: str | None,
        *,
        client_id: str | None = None,
        will: tuple[str, bytes] | None = None,
        disconnect: bool = True,
    ) -> ConnectOutcome:
        """Try one MQTT connection to the device listener with `identity`'s certificate (issued if missing; None:
        no certificate) and say how the broker answered — in milliseconds, naming the TLS alert when it refuses
        the certificate.

        The probe speaks TLS 1.2, where the broker judges the client certificate inside the handshake; with
        TLS 1.3 its alert can arrive after the client has written, and a reset may swallow it.
        `will` and `disconnect=False` are passed to `probe_connect` (to make the broker publish a last will).
        """
        context = self.ssl_context(identity)
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        return await probe_connect(
            self.host,
            self.port,
            ssl_context=context,
            client_id=client_id or f"probe-{secrets.token_hex(4)}",
            will=will,
            disconnect=disconnect,
        )

    async def probe_app(self, username: str | None, password: str | None = None) -> ConnectOutcome:
        """Try one MQTT connection to the app listener as `username` (its password by default)."""
        if self.app_port is None:
            raise MosquittoError("this broker has no app listener")
        if username is not None and password is None:
            password = self._app_passwords.get(username)
        return await probe_connect(
            self.host,
            self.app_port,
            ssl_context=self.ssl_context(None) if self.app_tls else None,
            client_id=username or f"probe-{secrets.token_hex(4)}",
            username=username,
            password=password,
        )

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"MosquittoBroker({self.host}:{self.port}, app_port={self.app_port}, {state})"


class _PortTaken(Exception):
    """Another process bound one of the picked ports between picking and binding (retry with new ones)."""
