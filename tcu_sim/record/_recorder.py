"""`Recorder`: every message on the car, app and control topics, as records, while it runs.

    async with Recorder(BrokerUrl("127.0.0.1", 8883, tls=True), pki.client_ssl_context(RECORDER),
                        sink=RecordingWriter(path, header), clock=clock, users=users) as recorder:
        await recorder.wait_ready(10)          # subscribed: from here on nothing is missed
        ...
        await recorder.drain()                 # what the broker has delivered so far is written

It connects as the `recorder` identity (`broker.pki.RECORDER`): the broker lets it read those topics and write
nothing. Each message becomes one record (`_format`), decoded and redacted (`_redact`) before it reaches the
sink. The connection is kept with backoff: a broker restart loses what was sent while it was down, no more.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Protocol, Self

import aiomqtt
import structlog

from broker.pki import RECORDER
from tcu_sim._net import SOCKET_OPTIONS
from tcu_sim.clock import Clock
from tcu_sim.fleet import BrokerUrl
from tcu_sim.record._format import KINDS
from tcu_sim.record._redact import Redactor, UserSecrets, classify_topic, decode_payload

__all__ = ["RecordSink", "Recorder", "recorder_filters"]

log = structlog.get_logger("tcu_sim.record")

_BACKOFF_CAP_S = 10.0
RECENT = 1000


class RecordSink(Protocol):
    """Where records go: a `RecordingWriter`, or a list in memory (the replay's own run)."""

    def write(self, record: dict[str, Any]) -> None:
        """Take one redacted record."""
        ...


def recorder_filters(prefix: str = "") -> list[str]:
    """The topic filters the recorder subscribes to (its ACL grants exactly these)."""
    head = prefix.rstrip("/") + "/" if prefix else ""
    return [
        *(f"{head}tcu/+/{kind}" for kind in ("status", "events", "commands", "results", "connection")),
        *(f"{head}app/+/{kind}" for kind in ("requests", "responses", "events")),
        f"{head}sim/+/control",
        f"{head}sim/+/control/results",
    ]


class Recorder:
    """Subscribes as `recorder` and writes every message it receives to `sink` (module docstring)."""

    def __init__(
        self,
        broker: BrokerUrl,
        tls_context: ssl.SSLContext | None,
        *,
        sink: RecordSink,
        clock: Clock,
        users: Iterable[UserSecrets] = (),
        topic_prefix: str = "",
        identifier: str = RECORDER,
        connect_timeout: float = 10.0,
    ) -> None:
        self.broker = broker
        self._tls = tls_context
        self.sink = sink
        self.clock = clock
        self.prefix = topic_prefix
        self.identifier = identifier
        self.connect_timeout = connect_timeout
        self._redactor = Redactor(users)
        self.count = 0
        self.last_error: str | None = None
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._received = 0
        self._progress = asyncio.Condition()
        #: The last `RECENT` records written (redacted, as in the file).
        self.recent: collections.deque[Mapping[str, Any]] = collections.deque(maxlen=RECENT)

    def __repr__(self) -> str:
        state = "subscribed" if self._ready.is_set() else "connecting"
        return f"Recorder({self.broker}, {state}, records={self.count})"

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run(), name=f"recorder[{self.broker}]")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def wait_ready(self, timeout: float) -> None:
        """Wait until subscribed; TimeoutError (with the last connection error) otherwise."""
        try:
            async with asyncio.timeout(timeout):
                await self._ready.wait()
        except TimeoutError:
            raise TimeoutError(f"recorder not subscribed to {self.broker} after {timeout:g} s "
                               f"({self.last_error or 'no answer'})") from None

    async def wait_records(self, count: int, timeout: float | None) -> None:
        """Wait until at least `count` records were written (TimeoutError after `timeout`; None: no limit)."""
        async with asyncio.timeout(timeout), self._progress:
            await self._progress.wait_for(lambda: self.count >= count)

    async def wait_for(self, predicate: Callable[[Mapping[str, Any]], bool], timeout: float) -> Mapping[str, Any]:
        """The first of the recent records (the last `RECENT` written) for which `predicate` holds, waiting up to
        `timeout` seconds for it to be written (TimeoutError otherwise)."""

        def found() -> Mapping[str, Any] | None:
            return next((r for r in self.recent if predicate(r)), None)

        async with asyncio.timeout(timeout), self._progress:
            await self._progress.wait_for(lambda: found() is not None)
        record = found()
        assert record is not None  # the wait ended because it was there
        return record

    async def _run(self) -> None:
        attempt = 0
        while True:
            try:
                await self._session()
                attempt = 0
            except aiomqtt.MqttError as exc:
                self.last_error = str(exc)
                log.warning("recorder.disconnected", broker=str(self.broker), error=str(exc))
            self._ready.clear()
            attempt += 1
            # Full jitter, like the cars: a fleet of tools must not come back in waves either.
            await asyncio.sleep(random.uniform(0, min(_BACKOFF_CAP_S, 0.2 * 2 ** min(attempt, 10))))

    async def _session(self) -> None:
        client = aiomqtt.Client(
            self.broker.host, self.broker.port, identifier=self.identifier, tls_context=self._tls,
            protocol=aiomqtt.ProtocolVersion.V311, clean_session=True, timeout=self.connect_timeout,
            socket_options=SOCKET_OPTIONS,
        )
        async with client:
            for topic_filter in recorder_filters(self.prefix):
                await client.subscribe(topic_filter, qos=1)
            self._ready.set()
            log.info("recorder.subscribed", broker=str(self.broker))
            async for message in client.messages:
                await self._take(message)

    async def _take(self, message: aiomqtt.Message) -> None:
        topic = message.topic.value
        classified = classify_topic(topic, self.prefix)
        payload = message.payload
        if classified is None or not isinstance(payload, bytes | bytearray):
            return
        record: dict[str, Any] = {
            # `t` is real time on purpose (when it happened on the wall clock), `vt` the run's clock.
            "n": self.count + 1, "t": time.time(), "vt": self.clock.now(), "dir": KINDS[classified.kind],
            "kind": classified.kind, "key": classified.key, "topic": topic,
        }
        if message.retain:
            record["retained"] = True  # was there before the recorder subscribed
        record.update(decode_payload(classified.kind, bytes(payload)))
        try:
            self._redactor.redact(record)
            self.sink.write(record)
        except Exception:  # one odd message must not end the recording
            log.exception("recorder.record_failed", topic=topic)
            return
        self.count += 1
        self.recent.append(record)
        async with self._progress:
            self._progress.notify_all()
