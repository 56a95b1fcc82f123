"""A NATS cluster of N child processes on loopback, with the tcu-sim configuration (the launcher of tests and bench).

    async with NatsCluster(directory, pki, vins, nodes=3) as cluster:
        cluster.urls                                     # ["mqtts://127.0.0.1:<mqtt port of node 0>", ...]
        async with cluster.client("cloud", node=2) as cloud:
            ...
        await cluster.kill_node(1)                       # SIGKILL: a node lost
        await cluster.start_node(1)                      # back on the same ports, rejoins the cluster

Readiness is each node's "Server is ready" log line followed by a real MQTT connection as the cloud (which also
waits until JetStream has a leader and the MQTT streams exist), never a sleep. Each node's log is kept in
`<directory>/node-<i>.log` and quoted when it fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import ssl
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiomqtt

from broker.mosquitto import AclPolicy, ConnectOutcome, find_executable, free_ports, probe_connect
from broker.pki import CLOUD, FleetPKI
from tcu_sim._net import SOCKET_OPTIONS

from ._config import NatsClusterConfig, NatsNode, write_cluster_config

__all__ = ["NatsCluster", "NatsError", "NatsNotFound", "find_nats_server"]

_SEARCH_PATHS = ("/usr/sbin/nats-server", "/usr/local/bin/nats-server", "/usr/bin/nats-server")
_READY = re.compile(r"Server is ready")
_HEALTH_POLL_S = 0.2  # seconds between looks at /healthz
_LOG_TAIL = 30
_NOT_FOUND = "nats-server not found: install it (apt-get install nats-server) or set TCU_SIM_NATS_SERVER"


class NatsError(RuntimeError):
    """A node did not start or stop as asked; the message quotes the end of its log."""


class NatsNotFound(NatsError):
    """No nats-server binary: install NATS or set TCU_SIM_NATS_SERVER to its path."""

    def __init__(self, message: str = _NOT_FOUND) -> None:
        super().__init__(message)


def find_nats_server() -> Path | None:
    """The nats-server binary: $TCU_SIM_NATS_SERVER, then PATH, then the usual directories."""
    return find_executable("nats-server", "TCU_SIM_NATS_SERVER", _SEARCH_PATHS)


class _NodeProcess:
    """One node's process and log."""

    def __init__(self, node: NatsNode, config_path: Path, log_path: Path) -> None:
        self.node = node
        self.config_path = config_path
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None
        self.reader: asyncio.Task[None] | None = None
        self.lines: list[str] = []
        self.changed = asyncio.Condition()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def spawn(self, binary: Path) -> int:
        mark = len(self.lines)
        self.process = await asyncio.create_subprocess_exec(
            str(binary),
            "-c",
            str(self.config_path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self.reader = asyncio.create_task(self._read(self.process), name=f"nats[{self.node.name}].log")
        return mark

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None  # created with a pipe
        with self.log_path.open("a", encoding="utf-8") as file:
            async for raw in process.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                file.write(line + "\n")
                async with self.changed:
                    self.lines.append(line)
                    self.changed.notify_all()

    async def wait_for_log(self, pattern: re.Pattern[str], since: int) -> None:
        async with self.changed:
            checked = since
            while True:
                if any(pattern.search(line) for line in self.lines[checked:]):
                    return
                checked = len(self.lines)
                await self.changed.wait()

    def kill_now(self) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()

    async def drain(self) -> None:
        if self.reader is not None:
            try:
                async with asyncio.timeout(5):
                    await self.reader
            except TimeoutError:
                self.reader.cancel()
            self.reader = None

    def tail(self) -> str:
        lines = self.lines[-_LOG_TAIL:]
        return f"--- {self.node.name} log (last lines) ---\n" + "\n".join(lines)


class NatsCluster:
    """N nats-server processes on `host`, clustered, with JetStream and the MQTT gateway (an async context manager).

    The identities are the fleet PKI's (mutual TLS, the certificate subject is the user); the permissions those
    of `policy` (default: the Mosquitto rules, SPEC §2.1/§7) for the cars `vins`, the cloud, the operator and the
    policy's named identities. Ports are picked free on the first start and kept for restarts of a node.
    """

    def __init__(
        self,
        directory: Path,
        pki: FleetPKI,
        vins: Iterable[str],
        *,
        nodes: int = 3,
        host: str = "127.0.0.1",
        policy: AclPolicy | None = None,
        binary: Path | str | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        self.directory = Path(directory).absolute()
        self.pki = pki
        self.vins = tuple(vins)
        self.size = nodes
        self.host = host
        self.policy = policy if policy is not None else AclPolicy()
        self.start_timeout = start_timeout
        self._binary = Path(binary) if binary is not None else None
        self._nodes: list[_NodeProcess] = []
        self.config: NatsClusterConfig | None = None

    # --- addresses
    @property
    def nodes(self) -> tuple[NatsNode, ...]:
        """The nodes' names and ports (after the first start)."""
        if self.config is None:
            raise NatsError("the cluster has not been started yet")
        return self.config.nodes

    @property
    def mqtt_ports(self) -> list[int]:
        """The MQTT (mutual TLS) port of every node, in node order."""
        return [node.mqtt for node in self.nodes]

    @property
    def urls(self) -> list[str]:
        """`mqtts://host:port` of every node, in node order (what `fleet run --broker` takes, comma-separated)."""
        return [f"mqtts://{self.host}:{port}" for port in self.mqtt_ports]

    def running(self, index: int) -> bool:
        """True while node `index` runs."""
        return self._nodes[index].running

    def pid(self, index: int) -> int | None:
        """The process id of node `index` while it runs."""
        process = self._nodes[index].process
        return process.pid if process is not None and self._nodes[index].running else None

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
            for node in self._nodes:
                node.kill_now()  # never leave a node behind
            raise

    def _write_config(self) -> None:
        ports = free_ports(self.host, 4 * self.size)
        nodes = [
            NatsNode(f"n{i}", client=a, cluster=b, mqtt=c, http=d)
            for i, (a, b, c, d) in enumerate(zip(*[iter(ports)] * 4, strict=True))
        ]
        self.pki.ensure_cloud()  # the readiness probe connects as the cloud
        self.config = NatsClusterConfig.from_pki(self.pki, self.vins, nodes=nodes, host=self.host, policy=self.policy)
        paths = write_cluster_config(self.directory, self.config)
        self._nodes = [
            _NodeProcess(node, path, self.directory / f"{node.name}.log")
            for node, path in zip(self.config.nodes, paths, strict=True)
        ]

    async def start(self) -> None:
        """Start every node and wait until each takes an MQTT connection; NatsError if one does not."""
        if self.config is None:
            self._write_config()
        try:
            async with asyncio.TaskGroup() as group:
                for index in range(self.size):
                    if not self._nodes[index].running:
                        group.create_task(self.start_node(index), name=f"nats[{index}].start")
        except BaseExceptionGroup as group_error:
            for node in self._nodes:
                node.kill_now()
            raise group_error.exceptions[0] from None

    async def start_node(self, index: int) -> None:
        """Start node `index` (again, on its ports) and wait until it takes an MQTT connection."""
        binary = self._binary or find_nats_server()
        if binary is None:
            raise NatsNotFound
        if self.config is None:
            self._write_config()
        node = self._nodes[index]
        if node.running:
            raise NatsError(f"node {node.node.name} is already running")
        mark = await node.spawn(binary)
        assert node.process is not None  # spawned
        try:
            async with asyncio.timeout(self.start_timeout):
                ready = asyncio.create_task(node.wait_for_log(_READY, mark))
                exited = asyncio.create_task(node.process.wait())
                try:
                    await asyncio.wait({ready, exited}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for task in (ready, exited):
                        task.cancel()
                    await asyncio.gather(ready, exited, return_exceptions=True)
                if node.process.returncode is not None:
                    await node.drain()
                    raise NatsError(f"{node.node.name} exited with {node.process.returncode}\n{node.tail()}")
                # JetStream needs a meta leader (a quorum of nodes) before the MQTT gateway answers a CONNECT.
                # Polled: nothing in the log says when the MQTT streams are ready for a new node.
                while True:
                    if (await self.probe(CLOUD, node=index)).accepted:
                        break
                    await asyncio.sleep(0.2)
        except TimeoutError:
            node.kill_now()
            await node.drain()
            raise NatsError(f"{node.node.name} not ready within {self.start_timeout} s\n{node.tail()}") from None
        except BaseException:
            node.kill_now()
            await node.drain()
            raise

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop every node (SIGTERM, SIGKILL after `timeout`)."""
        await asyncio.gather(*(self.stop_node(i, timeout=timeout) for i in range(len(self._nodes))))

    async def stop_node(self, index: int, timeout: float = 10.0) -> None:
        """SIGTERM node `index` and wait for its exit (SIGKILL after `timeout`)."""
        node = self._nodes[index]
        if node.running and node.process is not None:
            node.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(timeout):
                    await node.process.wait()
            except TimeoutError:
                node.kill_now()
                await node.process.wait()
        await node.drain()

    async def wait_healthy(self, timeout: float) -> None:
        """Wait until every running node's monitoring endpoint (`/healthz`) says it is healthy, JetStream included:
        after a node was lost, its streams and consumers have leaders again and QoS 1 flows. Polled (no log line
        says it); TimeoutError after `timeout` seconds naming the nodes that are not."""

        def healthy(port: int) -> bool:
            try:
                with urllib.request.urlopen(f"http://{self.host}:{port}/healthz", timeout=2) as reply:
                    return bool(reply.status == 200)
            except (OSError, ValueError):
                return False

        waiting = [n for n in self._nodes if n.running]
        try:
            async with asyncio.timeout(timeout):
                while waiting:
                    states = await asyncio.gather(*(asyncio.to_thread(healthy, n.node.http) for n in waiting))
                    waiting = [n for n, ok in zip(waiting, states, strict=True) if not ok]
                    if waiting:
                        await asyncio.sleep(_HEALTH_POLL_S)
        except TimeoutError:
            raise TimeoutError(f"not healthy within {timeout:g} s: {', '.join(n.node.name for n in waiting)}") from None

    async def kill_node(self, index: int) -> None:
        """SIGKILL node `index`: a node lost (its clients drop; what JetStream replicated survives)."""
        node = self._nodes[index]
        node.kill_now()
        if node.process is not None:
            await node.process.wait()
        await node.drain()

    def log_tail(self, index: int) -> str:
        """The last lines of node `index`'s log, for failure messages."""
        return self._nodes[index].tail()

    # --- clients
    def ssl_context(self, identity: str | None = None) -> ssl.SSLContext:
        """A TLS context trusting the fleet CA, presenting `identity`'s certificate (issued if missing)."""
        if identity is not None:
            self.pki.ensure(identity)
        return self.pki.client_ssl_context(identity)

    def client(self, identity: str, *, node: int = 0, identifier: str | None = None, **kwargs: Any) -> aiomqtt.Client:
        """An aiomqtt client (MQTT 3.1.1: NATS has no MQTT 5) to node `node`, authenticated by `identity`'s
        certificate; the client id defaults to the identity."""
        kwargs.setdefault("socket_options", SOCKET_OPTIONS)
        kwargs.setdefault("timeout", 5.0)
        return aiomqtt.Client(
            self.host,
            self.mqtt_ports[node],
            identifier=identifier if identifier is not None else identity,
            tls_context=self.ssl_context(identity),
            protocol=aiomqtt.ProtocolVersion.V311,
            **kwargs,
        )

    async def probe(self, identity: str | None, *, node: int = 0, client_id: str | None = None) -> ConnectOutcome:
        """One MQTT CONNECT to node `node` with `identity`'s certificate: how did the node answer?"""
        context = self.ssl_context(identity)
        context.maximum_version = ssl.TLSVersion.TLSv1_2  # the alert of a refused certificate arrives in-handshake
        return await probe_connect(
            self.host,
            self.mqtt_ports[node],
            ssl_context=context,
            client_id=client_id or f"probe-{identity}-{node}",
        )

    def __repr__(self) -> str:
        states = ",".join("up" if n.running else "down" for n in self._nodes) or "not started"
        return f"NatsCluster({self.host}, nodes={self.size}, {states})"
