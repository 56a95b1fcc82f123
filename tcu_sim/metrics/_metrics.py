"""The metrics: event-driven counters (a task reading the stream) and a collector read at scrape time."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import Any, Final, Protocol, Self

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import start_http_server
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tcu_sim.events import (
    AppRequestRefused,
    BrokerAction,
    CarCommandHandled,
    CarConnection,
    CarControlHandled,
    CarMessageHandled,
    CloudConnection,
    CommandChanged,
    Event,
    EventStream,
    FaultChanged,
    Subscription,
)
from tcu_sim.protocol import AppOp, CommandState, ControlAction, ErrorCode, RefusalReason

__all__ = ["METRIC_NAMES", "Metrics", "MetricsServer"]

log = structlog.get_logger("tcu_sim.metrics")

_NS = "tcu_sim"
_OTHER = "other"
_MAX_FREE_LABELS = 32  # distinct values of a label fed by free text (a disconnect reason) before `other`
# Round trips in clock seconds: app request to the command's final state (a car replies in well under a second,
# an offline car's command waits for its TTL).
_ROUND_TRIP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class _HandlerStats(Protocol):
    """What the metrics read of the cloud handler's counters (`broker.handler.HandlerStats`)."""

    @property
    def received(self) -> Mapping[str, int]: ...
    @property
    def applied(self) -> Mapping[str, int]: ...
    @property
    def requests(self) -> Mapping[str, int]: ...
    @property
    def commands_sent(self) -> int: ...
    @property
    def pushes(self) -> int: ...
    @property
    def status_batches(self) -> int: ...
    @property
    def status_batch_messages(self) -> int: ...
    @property
    def dropped_incoming(self) -> int: ...


class _SessionStats(Protocol):
    @property
    def published(self) -> int: ...

    @property
    def connect_failures(self) -> int: ...


class _Session(Protocol):
    @property
    def online(self) -> bool: ...

    @property
    def stats(self) -> _SessionStats: ...


class _Bounded:
    """A label fed by free text: its first `limit` distinct values, then `other`."""

    def __init__(self, known: frozenset[str] = frozenset(), limit: int = _MAX_FREE_LABELS) -> None:
        self._known, self._seen, self._limit = known, set[str](), limit

    def __call__(self, value: str | None) -> str:
        if value is None or value == "":
            return "none"
        if self._known:
            return value if value in self._known else _OTHER
        if value in self._seen or len(self._seen) < self._limit:
            self._seen.add(value)
            return value
        return _OTHER


def _values(*enums: Any) -> frozenset[str]:
    return frozenset(str(member.value) for enum in enums for member in enum)


class Metrics:
    """The metrics of one running system (its `EventStream`, and optionally its cloud's and fleet's counters).

    An async context manager: entering subscribes to `events` and starts the `metrics.events` task that moves
    the counters; `serve(port)` exposes `/metrics` over HTTP until exit. `render()` is the text a scrape gets.
    """

    def __init__(
        self,
        events: EventStream,
        *,
        cloud: Callable[[], _HandlerStats | None] | None = None,
        fleet: Callable[[], Mapping[str, _Session]] | None = None,
        buffer: int = 100_000,
    ) -> None:
        self.events = events
        self.registry = CollectorRegistry(auto_describe=True)
        #: Where the cloud's and the fleet's counters are read at scrape time (may be set once they exist).
        self.cloud, self.fleet, self._buffer = cloud, fleet, buffer
        self._subscription: Subscription[Event] | None = None
        self._task: asyncio.Task[None] | None = None
        self._servers: list[MetricsServer] = []
        self._online: dict[str, set[str]] = {"fleet": set(), "cloud": set()}
        self._seen_online: dict[str, set[str]] = {"fleet": set(), "cloud": set()}
        self._active_faults: set[tuple[str, str]] = set()
        self._op = _Bounded(_values(AppOp))
        self._command_op = _Bounded()
        self._action = _Bounded(_values(ControlAction))
        self._code = _Bounded(_values(ErrorCode))
        self._reason = _Bounded(_values(RefusalReason))
        self._car_reason = _Bounded()
        self._disconnect_reason = _Bounded()
        self._fault = _Bounded()
        self._broker_action = _Bounded()
        r = self.registry
        self.connects = Counter(f"{_NS}_car_connects", "Cars that came online (side: as fleet or cloud saw it).",
                                ["side"], registry=r)
        self.reconnects = Counter(f"{_NS}_car_reconnects", "Cars that came online again after being online before.",
                                  ["side"], registry=r)
        self.disconnects = Counter(f"{_NS}_car_disconnects", "Cars that went offline, by reason (fleet side).",
                                   ["side", "reason"], registry=r)
        self.car_messages = Counter(f"{_NS}_cloud_car_messages", "Car messages the cloud handled, by topic kind and "
                                    "outcome (applied or refused).", ["kind", "outcome"], registry=r)
        self.cloud_refusals = Counter(f"{_NS}_cloud_refusals", "Car messages the cloud refused, by reason.",
                                      ["reason"], registry=r)
        self.car_commands = Counter(f"{_NS}_car_commands", "Signed commands cars handled, by outcome "
                                    "(succeeded, failed, rejected) and reason.", ["outcome", "reason"], registry=r)
        self.car_controls = Counter(f"{_NS}_car_controls", "Operator controls cars handled, by action and whether "
                                    "they were applied.", ["action", "ok"], registry=r)
        self.app_refusals = Counter(f"{_NS}_app_refusals", "App requests the cloud answered with an error, by op "
                                    "and code.", ["op", "code"], registry=r)
        self.commands = Counter(f"{_NS}_commands", "App commands entering each state of their lifecycle.",
                                ["op", "state"], registry=r)
        self.round_trip = Histogram(f"{_NS}_command_round_trip_seconds", "Clock seconds from an app command's "
                                    "creation to its final state.", ["op", "state"], buckets=_ROUND_TRIP_BUCKETS,
                                    registry=r)
        self.faults_active = Gauge(f"{_NS}_faults_active", "Faults applied and not yet cleared, by fault kind.",
                                   ["fault"], registry=r)
        self.faults = Counter(f"{_NS}_faults", "Faults applied, by fault kind.", ["fault"], registry=r)
        self.broker_actions = Counter(f"{_NS}_broker_actions", "Broker stops, kills, starts and restarts.",
                                      ["action"], registry=r)
        self.cloud_connected = Gauge(f"{_NS}_cloud_connected", "1 while the cloud's MQTT connection is up.",
                                     registry=r)
        r.register(_Collected(self))

    def __repr__(self) -> str:
        running = self._task is not None and not self._task.done()
        return f"Metrics(events={self.events.name!r}, running={running}, servers={[s.port for s in self._servers]})"

    async def __aenter__(self) -> Self:
        self._subscription = self.events.subscribe(buffer=self._buffer, name="metrics")
        self._task = asyncio.create_task(self._follow(self._subscription), name="metrics.events")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for server in self._servers:
            server.close()
        self._servers.clear()
        if self._subscription is not None:
            self._subscription.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def serve(self, port: int = 0, host: str = "127.0.0.1") -> MetricsServer:
        """Serve `/metrics` on `host:port` (0: a free port, see `.port`) until the context exits."""
        server = MetricsServer(self.registry, port, host)
        self._servers.append(server)
        return server

    def render(self) -> str:
        """The Prometheus text a scrape of `/metrics` returns now."""
        return generate_latest(self.registry).decode("utf-8")

    def catch_up(self) -> None:
        """Count every event published so far now (on the event loop), so that a scrape right after sees them."""
        if self._subscription is not None:
            for event in self._subscription.drain():
                self._count_safely(event)

    # --- the events -----------------------------------------------------------------------------------------
    async def _follow(self, subscription: Subscription[Event]) -> None:
        async for event in subscription:
            self._count_safely(event)

    def _count_safely(self, event: Event) -> None:
        try:
            self.count(event)
        except Exception:  # a metric must never end the task that keeps every other metric moving
            log.exception("metrics: event not counted", kind=event.kind)

    def count(self, event: Event) -> None:
        """Move the metrics for one event."""
        if isinstance(event, CommandChanged):
            op = self._command_op(event.op)
            self.commands.labels(op, event.state).inc()
            if event.state in _FINAL and event.created_at:
                self.round_trip.labels(op, event.state).observe(max(0.0, event.at - event.created_at))
        elif isinstance(event, CarMessageHandled):
            self.car_messages.labels(event.topic_kind, "applied" if event.applied else "refused").inc()
            if not event.applied:
                self.cloud_refusals.labels(self._reason(event.reason)).inc()
        elif isinstance(event, CarConnection):
            self._connection(event)
        elif isinstance(event, CarCommandHandled):
            self.car_commands.labels(event.outcome, self._car_reason(event.reason)).inc()
        elif isinstance(event, CarControlHandled):
            self.car_controls.labels(self._action(event.action), "true" if event.ok else "false").inc()
        elif isinstance(event, AppRequestRefused):
            self.app_refusals.labels(self._op(event.op), self._code(event.code)).inc()
        elif isinstance(event, FaultChanged):
            self._fault_changed(event)
        elif isinstance(event, BrokerAction):
            self.broker_actions.labels(self._broker_action(event.action)).inc()
        elif isinstance(event, CloudConnection):
            self.cloud_connected.set(1 if event.connected else 0)

    def _connection(self, event: CarConnection) -> None:
        side = event.source.value if event.source.value in self._online else "fleet"
        online, seen = self._online[side], self._seen_online[side]
        if event.online:
            if event.vin not in online:
                self.connects.labels(side).inc()
                if event.vin in seen:
                    self.reconnects.labels(side).inc()
            online.add(event.vin)
            seen.add(event.vin)
        else:
            if event.vin in online or event.vin not in seen:  # known online, or online before we subscribed
                self.disconnects.labels(side, self._disconnect_reason(event.reason)).inc()
            online.discard(event.vin)
            seen.add(event.vin)

    def _fault_changed(self, event: FaultChanged) -> None:
        fault = self._fault(event.fault)
        key = (event.target, fault)
        if event.active and key not in self._active_faults:
            self._active_faults.add(key)
            self.faults.labels(fault).inc()
        elif not event.active:
            self._active_faults.discard(key)
        self.faults_active.labels(fault).set(sum(1 for _, f in self._active_faults if f == fault))


_FINAL: Final = frozenset(s.value for s in CommandState if s.is_final)


class _Collected(Collector):
    """What cloud, fleet and the stream only count: read at scrape time (on the HTTP server's thread)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[Metric]:
        return []  # names vary with what runs (cloud, fleet); nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        m = self._metrics
        stream = m.events
        yield CounterMetricFamily(f"{_NS}_event_stream_dropped", "Events dropped because a subscriber's buffer "
                                  "was full (over every subscriber).", value=stream.dropped)
        yield CounterMetricFamily(f"{_NS}_event_stream_published", "Events published into the stream.",
                                  value=stream.published)
        yield GaugeMetricFamily(f"{_NS}_event_stream_subscribers", "Subscriptions open now.",
                                value=stream.subscribers)
        online = GaugeMetricFamily(f"{_NS}_cars_online", "Cars online now, as the fleet (its sessions, or the "
                                   "events) or the cloud (the events) sees them.", labels=["side"])
        sessions = _read(m.fleet)
        sessions = dict(sessions) if sessions is not None else None
        fleet_online = len(m._online["fleet"]) if sessions is None else sum(s.online for s in sessions.values())
        online.add_metric(["fleet"], fleet_online)
        online.add_metric(["cloud"], len(m._online["cloud"]))
        yield online
        stats = _read(m.cloud)
        if stats is not None:
            yield from _cloud_metrics(stats)
        if sessions is not None:
            yield from _fleet_metrics(sessions)


def _read(source: Callable[[], Any] | None) -> Any:
    """What an accessor gives, or None while there is nothing to read (not started yet, or stopped)."""
    if source is None:
        return None
    try:
        return source()
    except Exception:  # a cloud or fleet that is not up (yet) has no counters; the scrape still answers
        return None


def _cloud_metrics(stats: _HandlerStats) -> Iterator[Metric]:
    received = CounterMetricFamily(f"{_NS}_cloud_messages_received", "Car messages the cloud received, by kind.",
                                   labels=["kind"])
    for kind, n in sorted(dict(stats.received).items()):
        received.add_metric([kind], n)
    yield received
    requests = CounterMetricFamily(f"{_NS}_cloud_app_requests", "App requests the cloud received, by op.",
                                   labels=["op"])
    known = _values(AppOp)
    by_op: dict[str, int] = {}
    for op, n in dict(stats.requests).items():
        label = op if op in known else _OTHER
        by_op[label] = by_op.get(label, 0) + n
    for op, n in sorted(by_op.items()):
        requests.add_metric([op], n)
    yield requests
    sent = CounterMetricFamily(f"{_NS}_cloud_messages_sent", "Messages the cloud sent, by kind.", labels=["kind"])
    sent.add_metric(["command"], stats.commands_sent)
    sent.add_metric(["push"], stats.pushes)
    yield sent
    yield CounterMetricFamily(f"{_NS}_cloud_statuses_applied", "Car statuses the cloud applied (rate(): per "
                              "second).", value=dict(stats.applied).get("status", 0))
    yield CounterMetricFamily(f"{_NS}_cloud_status_batches", "Registry transactions that applied statuses.",
                              value=stats.status_batches)
    yield CounterMetricFamily(f"{_NS}_cloud_status_batch_messages", "Statuses in those transactions (divided "
                              "by the batches: the mean batch size).", value=stats.status_batch_messages)
    yield CounterMetricFamily(f"{_NS}_cloud_incoming_dropped", "Messages the cloud's bounded incoming queue "
                              "dropped.", value=stats.dropped_incoming)


def _fleet_metrics(sessions: Mapping[str, _Session]) -> Iterator[Metric]:
    yield GaugeMetricFamily(f"{_NS}_fleet_cars", "Cars the fleet runs.", value=len(sessions))
    yield CounterMetricFamily(f"{_NS}_fleet_messages_published", "Messages the fleet's cars published.",
                              value=sum(s.stats.published for s in sessions.values()))
    yield CounterMetricFamily(f"{_NS}_fleet_connect_failures", "Connection attempts of the fleet's cars that failed "
                              "(no connection, no CONNACK in time, refused by the broker).",
                              value=sum(s.stats.connect_failures for s in sessions.values()))


class MetricsServer:
    """`/metrics` over HTTP on a thread of its own (prometheus_client's WSGI server); `close()` stops it."""

    def __init__(self, registry: CollectorRegistry, port: int = 0, host: str = "127.0.0.1") -> None:
        try:
            self._server, self._thread = start_http_server(port, host, registry=registry)
        except OSError as exc:
            raise OSError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
        self.host = host
        self.port: int = self._server.server_port
        self._closed = threading.Event()

    def __repr__(self) -> str:
        return f"MetricsServer(http://{self.host}:{self.port}/metrics, closed={self._closed.is_set()})"

    @property
    def url(self) -> str:
        """Where to scrape."""
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving (idempotent)."""
        if not self._closed.is_set():
            self._closed.set()
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)


#: Every metric family `/metrics` may show (without the `_total`/`_bucket` suffixes), for docs and dashboards.
METRIC_NAMES: Final = (
    f"{_NS}_app_refusals",
    f"{_NS}_broker_actions",
    f"{_NS}_car_commands",
    f"{_NS}_car_connects",
    f"{_NS}_car_controls",
    f"{_NS}_car_disconnects",
    f"{_NS}_car_reconnects",
    f"{_NS}_cars_online",
    f"{_NS}_cloud_app_requests",
    f"{_NS}_cloud_car_messages",
    f"{_NS}_cloud_connected",
    f"{_NS}_cloud_incoming_dropped",
    f"{_NS}_cloud_messages_received",
    f"{_NS}_cloud_messages_sent",
    f"{_NS}_cloud_refusals",
    f"{_NS}_cloud_status_batch_messages",
    f"{_NS}_cloud_status_batches",
    f"{_NS}_cloud_statuses_applied",
    f"{_NS}_command_round_trip_seconds",
    f"{_NS}_commands",
    f"{_NS}_event_stream_dropped",
    f"{_NS}_event_stream_published",
    f"{_NS}_event_stream_subscribers",
    f"{_NS}_faults",
    f"{_NS}_faults_active",
    f"{_NS}_fleet_cars",
    f"{_NS}_fleet_connect_failures",
    f"{_NS}_fleet_messages_published",
)
