"""`CloudHandler`: the cloud on MQTT — car messages in, app requests answered, commands out.

One async context manager owns every long-lived task, each named, in one `asyncio.TaskGroup`:

- `cloud.mqtt` — the connection: subscribe, receive, reconnect with backoff;
- `cloud.cars[i]` — workers applying verified car messages, in batches of what waits in their queue (see
  `CarMessages`); a car always goes to the same worker, so its messages are applied in order;
  `cloud.apps[i]` the same for app requests, by client id, one at a time;
- `cloud.expiry` — moves overdue commands to `timed_out` and tells the apps (every `expiry_interval_s`);
- `cloud.reminders` — licence reminders (R14) by mail and in the car's infotainment (every
  `reminder_interval_s`).

Both periodic tasks run on the injected clock, so a virtual clock drives them in tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import zlib
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Self

import aiomqtt
import structlog

from broker.cloud import CloudServices
from broker.registry import background_steps
from tcu_sim._aio import cancel_and_wait
from tcu_sim.clock import Clock
from tcu_sim.events import CloudConnection, EventStream, Source
from tcu_sim.protocol import (
    CLOUD,
    DEFAULT_ALGORITHMS,
    LEGACY_ALGORITHMS,
    KeySet,
    ParsedTopic,
    ProtocolError,
    Signer,
    SigningKey,
    TopicKind,
    TopicRoot,
    Topics,
    Verifier,
)

from ._apps import AppRequests
from ._cars import CarMessage, CarMessages, StoreUnavailable
from ._commands import CommandSender
from ._config import HandlerConfig
from ._directory import ClientDirectory
from ._mqtt import Delivery, MqttLink, PublishFailed, Subscription
from ._push import Pusher, describe_error
from ._stats import HandlerStats
from ._verifypool import VerifyPool

__all__ = ["CloudHandler", "quiet_sql_debug_logs"]

log = structlog.get_logger("broker.handler")

_CAR_KINDS = (TopicKind.STATUS, TopicKind.EVENTS, TopicKind.RESULTS)
_Item = tuple[ParsedTopic, bytes, Delivery]
_Job = Callable[[], Awaitable[int]]
_STAGE_TEXT = {"30d": "30 days", "15d": "15 days", "48h": "48 hours"}


def quiet_sql_debug_logs() -> None:
    """Keep the SQL drivers' DEBUG lines out of the logs: aiosqlite logs every statement with its parameters,
    and a parameter may be a simulated mail whose body holds a verification code (a secret)."""
    for name in ("aiosqlite", "asyncpg"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET or logger.level < logging.INFO:
            logger.setLevel(logging.INFO)


class CloudHandler:
    """The cloud's MQTT handler (issue 4).

    ```
    async with open_registry(db_url) as registry:
        services = CloudServices(registry, clock, secret)
        async with CloudHandler(config, services, clock, host="localhost", port=8883, cloud_key=key,
                                fleet_keys=KeySet.load(state / "fleet.jwks.json"), tls_context=ctx) as cloud:
            await cloud.wait_ready(10)
            ...
    ```
    """

    def __init__(
        self,
        config: HandlerConfig,
        services: CloudServices,
        clock: Clock,
        *,
        host: str,
        port: int,
        cloud_key: SigningKey,
        fleet_keys: KeySet,
        tls_context: ssl.SSLContext | None = None,
        username: str | None = None,
        password: str | None = None,
        rng: random.Random | None = None,
        events: EventStream | None = None,
    ) -> None:
        quiet_sql_debug_logs()
        #: What the cloud does, as typed events (SPEC §8): subscribe here, never wrap a method.
        self.events = events if events is not None else EventStream("cloud")
        self.config = config
        self.services = services
        self.registry = services.registry
        self.clock = clock
        self.topics = Topics(config.topic_prefix)
        self.stats = HandlerStats()
        self.fleet_keys = fleet_keys
        self.directory = ClientDirectory(services.registry, clock)
        self.link = MqttLink(
            config,
            host=host,
            port=port,
            subscriptions=self._subscriptions(),
            sink=self._route,
            stats=self.stats,
            tls_context=tls_context,
            username=username,
            password=password,
            rng=rng,
            on_connection=self._connection_changed,
        )
        self.pusher = Pusher(self.link, self.topics, clock, self.directory, self.stats, self.events)
        self.sender = CommandSender(
            config=config,
            services=services,
            signer=Signer(cloud_key, CLOUD, clock),
            link=self.link,
            topics=self.topics,
            pusher=self.pusher,
            clock=clock,
            stats=self.stats,
        )
        verifier = Verifier(
            fleet_keys,
            audience=CLOUD,
            clock=clock,
            skew_s=config.clock_skew_s,
            max_bytes=config.max_message_bytes,
            algorithms=LEGACY_ALGORITHMS if config.legacy_eddsa else DEFAULT_ALGORITHMS,
        )
        self.cars = CarMessages(
            services=services, verifier=verifier, sender=self.sender, pusher=self.pusher, stats=self.stats,
            events=self.events, config=config,
        )
        self.apps = AppRequests(
            services=services,
            sender=self.sender,
            directory=self.directory,
            stats=self.stats,
            events=self.events,
            clock=clock,
            max_bytes=config.max_message_bytes,
        )
        self._car_queues: list[asyncio.Queue[CarMessage]] = []
        self._app_queues: list[asyncio.Queue[_Item]] = []
        self._group: asyncio.TaskGroup | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._progress = asyncio.Condition()

    def __repr__(self) -> str:
        state = "running" if self._group is not None else "stopped"
        return (
            f"CloudHandler({state}, {self.link!r}, received={sum(self.stats.received.values())},"
            f" refused={sum(self.stats.refused.values())}, requests={sum(self.stats.requests.values())})"
        )

    def _connection_changed(self, connected: bool, error: str | None) -> None:
        self.events.publish(CloudConnection(at=self.clock.now(), source=Source.CLOUD, connected=connected, error=error))

    def _subscriptions(self) -> list[Subscription]:
        cfg, t = self.config, self.topics

        def shared(topic_filter: str) -> str:
            return Topics.shared(topic_filter, cfg.share_group) if cfg.shared_subscriptions else topic_filter

        subs = [Subscription(shared(t.all_tcu(kind))) for kind in _CAR_KINDS]
        subs.append(Subscription(t.all_tcu(TopicKind.CONNECTION)))  # never shared: see HandlerConfig
        if cfg.mqtt_apps:
            subs.append(Subscription(shared(t.all_app_requests())))
        return subs

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        cfg = self.config
        if cfg.verify_processes > 0:
            verifier = self.cars.verifier
            pool = VerifyPool(
                cfg.verify_processes,
                self.fleet_keys,
                audience=verifier.audience,
                skew_s=verifier.skew_s,
                max_bytes=verifier.max_bytes,
                algorithms=verifier.algorithms,
            )
            await pool.__aenter__()
            self.cars.pool = pool
        self._car_queues = [asyncio.Queue(cfg.worker_queue_size) for _ in range(cfg.car_workers)]
        self._app_queues = [asyncio.Queue(cfg.worker_queue_size) for _ in range(cfg.app_workers)]
        group = asyncio.TaskGroup()
        await group.__aenter__()
        self._group = group
        tasks = [group.create_task(self.link.run(), name="cloud.mqtt")]
        tasks += [
            group.create_task(self._car_worker(q), name=f"cloud.cars[{i}]") for i, q in enumerate(self._car_queues)
        ]
        tasks += [
            group.create_task(self._app_worker(q), name=f"cloud.apps[{i}]") for i, q in enumerate(self._app_queues)
        ]
        tasks.append(group.create_task(self._expiry_loop(), name="cloud.expiry"))
        tasks.append(group.create_task(self._reminder_loop(), name="cloud.reminders"))
        self._tasks = tasks
        self.services.ctx.mail_listeners.append(self.pusher.mail)
        log.info("cloud.started", client_id=cfg.client_id, broker=f"{self.link.host}:{self.link.port}",
                 shared=cfg.shared_subscriptions, car_keys=len(self.fleet_keys))
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with contextlib.suppress(ValueError):
            self.services.ctx.mail_listeners.remove(self.pusher.mail)
        group, self._group = self._group, None
        tasks, self._tasks = self._tasks, []
        stuck = await cancel_and_wait(tasks, timeout=10.0)
        if stuck:
            log.error("cloud.tasks_not_stopping", tasks=sorted(t.get_name() for t in stuck))
        elif group is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await group.__aexit__(None, None, None)
        pool, self.cars.pool = self.cars.pool, None
        if pool is not None:
            await pool.__aexit__(None, None, None)
        log.info("cloud.stopped", **self.stats.as_dict())

    async def wait_ready(self, timeout: float) -> None:
        """Return once connected and subscribed; TimeoutError after `timeout` seconds."""
        await self.link.wait_connected(timeout)

    # -- routing ---------------------------------------------------------------------------------------------
    async def _route(self, message: aiomqtt.Message, delivery: Delivery) -> None:
        topic = str(message.topic)
        try:
            parsed = self.topics.parse(topic)
        except ProtocolError as exc:
            self.stats.refused[exc.reason.value] += 1
            log.warning("message.bad_topic", topic=topic[:200], reason=exc.reason.value)
            delivery.settle()
            return
        payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
        shard = zlib.crc32(parsed.key.encode())
        if parsed.root is TopicRoot.TCU and (parsed.kind in _CAR_KINDS or parsed.kind is TopicKind.CONNECTION):
            await self._car_queues[shard % len(self._car_queues)].put(CarMessage(parsed, payload, delivery))
        elif parsed.kind is TopicKind.APP_REQUESTS:
            await self._app_queues[shard % len(self._app_queues)].put((parsed, payload, delivery))
        else:
            delivery.settle()  # matched no subscription of ours (a broker quirk): nothing to do

    async def _car_worker(self, queue: asyncio.Queue[CarMessage]) -> None:
        cfg = self.config
        while True:
            _raise_lost_cancellation()
            batch = [await queue.get()]
            try:
                await self._fill(queue, batch)
                structlog.contextvars.clear_contextvars()
                await self.cars.handle_batch(batch)
            except StoreUnavailable as exc:
                # Not acknowledged: reconnect, so that the broker delivers what was not applied again.
                self.stats.handler_errors += 1
                self.link.reconnect(f"registry unavailable for {cfg.store_retry_s:g} s ({exc})")
            except Exception as exc:
                # A bug outside one message's application: count it and carry on with the next batch.
                self.stats.handler_errors += 1
                log.error("car.batch_failed", messages=len(batch), **describe_error(exc))
                for message in batch:
                    message.delivery.settle()
            finally:
                structlog.contextvars.clear_contextvars()
                for _ in batch:
                    queue.task_done()
                await self._notify_progress()

    async def _fill(self, queue: asyncio.Queue[CarMessage], batch: list[CarMessage]) -> None:
        """Add what waits in the queue to `batch`, up to `car_batch_max`; wait up to `car_batch_wait_s` for more.
        With no wait, the loop still gets a few turns to read what the socket holds (a task's next step runs
        before the reads of its turn, and a message passes the MQTT client's queue and the router first): two
        for a lone message, and while messages keep coming, up to 16 turns without a new one. Registry steps no
        longer leave the loop (SQLite runs inline), so without these turns a worker under load would apply a
        few messages per transaction instead of what arrived meanwhile (P3: ~3 a batch instead of ~80)."""
        limit, wait = self.config.car_batch_max, self.config.car_batch_wait_s
        deadline = asyncio.get_running_loop().time() + wait
        idle_turns = 0
        while len(batch) < limit:
            if not queue.empty():
                batch.append(queue.get_nowait())
                idle_turns = 0
                continue
            if wait == 0:
                if idle_turns >= (2 if len(batch) == 1 else 16):
                    return
                idle_turns += 1
                await asyncio.sleep(0)
                continue
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            try:
                async with asyncio.timeout(remaining):
                    batch.append(await queue.get())
            except TimeoutError:
                return

    async def _app_worker(self, queue: asyncio.Queue[_Item]) -> None:
        while True:
            _raise_lost_cancellation()
            parsed, payload, delivery = await queue.get()
            client_id = parsed.key
            structlog.contextvars.clear_contextvars()
            structlog.contextvars.bind_contextvars(client_id=client_id)
            try:
                async with asyncio.timeout(self.config.message_timeout_s):
                    await self._answer(client_id, payload)
            except TimeoutError:
                # The app gets no answer and times out itself; a retry with the same id is safe.
                self.stats.handler_errors += 1
                log.error("app.timed_out", timeout_s=self.config.message_timeout_s)
            except Exception as exc:
                self.stats.handler_errors += 1
                log.error("app.failed", **describe_error(exc))
            finally:
                structlog.contextvars.clear_contextvars()
                delivery.settle()
                queue.task_done()
                await self._notify_progress()

    async def _answer(self, client_id: str, payload: bytes) -> None:
        reply = await self.apps.handle(client_id, payload)
        if reply is None:
            return
        structlog.contextvars.bind_contextvars(request_id=reply.response.id)
        try:
            await self.link.publish(self.topics.app_responses(client_id), reply.payload(), qos=1)
        except PublishFailed as exc:
            log.warning("app.reply_failed", error=str(exc))
        if reply.after is not None:
            await reply.after()

    async def _notify_progress(self) -> None:
        async with self._progress:
            self._progress.notify_all()

    async def wait_for(self, predicate: Callable[[HandlerStats], bool], timeout: float) -> None:
        """Wait until `predicate(stats)` holds, checked after every message handled (for tests and tools
        that must know a message was applied or refused); TimeoutError after `timeout` seconds."""
        async with asyncio.timeout(timeout), self._progress:
            await self._progress.wait_for(lambda: predicate(self.stats))

    async def drain(self, timeout: float) -> None:
        """Wait until every message received so far was handled (for tests and orderly shutdown)."""
        async with asyncio.timeout(timeout):
            for car_queue in self._car_queues:
                await car_queue.join()
            for app_queue in self._app_queues:
                await app_queue.join()

    # -- periodic tasks --------------------------------------------------------------------------------------
    async def expire_now(self) -> int:
        """Expire overdue commands now (what the `cloud.expiry` task does periodically); how many."""
        return len(await self.sender.expire_overdue())

    async def remind_now(self) -> int:
        """Send due licence reminders now (what `cloud.reminders` does periodically); how many."""
        reminders = await self.services.licences.run_due_reminders()
        for r in reminders:
            log.info("licence.reminder", vin=r.vin, stage=r.stage, user_id=r.user_id)
            if self.config.notify_reminders_in_car:
                when = "have ended" if r.stage == "end" else f"end in {_STAGE_TEXT.get(r.stage, r.stage)}"
                await self.sender.notify(r.vin, f"Your CUPRA CONNECT services {when}. Renew them in the store.")
        return len(reminders)

    async def _expiry_loop(self) -> None:
        await self._periodic("expiry", self.expire_now, self.config.expiry_interval_s)

    async def _reminder_loop(self) -> None:
        await self._periodic("reminders", self.remind_now, self.config.reminder_interval_s)

    async def _periodic(self, name: str, job: _Job, interval: float) -> None:
        while True:
            try:
                # Background work: its registry steps give the loop back between them (requests go first).
                with background_steps():
                    async with asyncio.timeout(self.config.job_timeout_s):
                        await job()
            except TimeoutError:
                self.stats.handler_errors += 1
                log.error(f"{name}.timed_out", timeout_s=self.config.job_timeout_s)
            except Exception as exc:
                self.stats.handler_errors += 1
                log.error(f"{name}.failed", **describe_error(exc))
            await self.clock.sleep(interval)


def _raise_lost_cancellation() -> None:
    """Python 3.11's `asyncio.wait_for` (inside aiomqtt) can swallow a cancellation that races a completing
    operation: the task is still marked as cancelling but goes on. A worker loop calls this on every turn so
    that a stop it was asked for is never lost (a lost one hung the handler's shutdown)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError

