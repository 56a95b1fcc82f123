"""Signed statuses verified and applied by one cloud process (SPEC P3), measured on the handler's own path.

The cloud handler's car-message path (`CarMessages.handle`: signature with the key pinned to the topic's VIN,
claims, body model, `seq` high-water mark in the registry, then the status stored) is driven directly with
statuses signed beforehand by the fleet's real car keys, sharded over the handler's car workers by VIN exactly
as its router does. MQTT delivery is not part of this figure (the round-trip figures cover it); signing happens
before the clock starts. "None lost" means every message was applied and none refused.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from broker.cloud import CloudServices, PasswordHasher, ServerSecret
from broker.handler import CloudHandler, HandlerConfig
from broker.registry import open_registry
from tcu_sim.clock import SystemClock
from tcu_sim.fleet import CarSpec, StateDir
from tcu_sim.protocol import CLOUD, MessageType, ParsedTopic, Signer, Topics
from tcu_sim.vehicle import Vehicle

__all__ = ["StatusThroughput", "measure_status_throughput"]


@dataclass(frozen=True, slots=True)
class StatusThroughput:
    """How fast one cloud process verified and applied signed statuses."""

    messages: int
    cars: int
    seconds: float
    applied: int
    refused: int
    workers: int

    @property
    def per_second(self) -> float:
        return self.applied / self.seconds if self.seconds > 0 else 0.0

    @property
    def lost(self) -> int:
        return self.messages - self.applied


async def measure_status_throughput(
    state: StateDir,
    cars: Sequence[CarSpec],
    *,
    per_car: int,
    registry_url: str,
    config: HandlerConfig | None = None,
) -> StatusThroughput:
    """Sign `per_car` statuses for each car, then time the handler's workers verifying and applying them all."""
    from tcu_sim.cli.cloud import vehicle_records  # the manifest → registry mapping `tcu-sim cloud run` uses

    clock = SystemClock()
    config = config or HandlerConfig()
    topics = Topics(config.topic_prefix)
    if registry_url.startswith("sqlite://"):
        Path(registry_url.removeprefix("sqlite://")).parent.mkdir(parents=True, exist_ok=True)
    messages = _signed_statuses(state, cars, per_car, clock, topics)
    async with open_registry(registry_url) as registry:
        services = CloudServices(registry, clock, ServerSecret.generate(), passwords=PasswordHasher.for_tests())
        records, _prefix = vehicle_records(state.root)
        await services.vehicles.import_vehicles(records)
        handler = CloudHandler(
            config, services, clock, host="127.0.0.1", port=1,  # never connected: only its car path is used
            cloud_key=state.load_cloud_signing_key(), fleet_keys=state.load_fleet_keys(),
        )
        queues: list[asyncio.Queue[tuple[ParsedTopic, bytes] | None]] = [
            asyncio.Queue(config.worker_queue_size) for _ in range(config.car_workers)
        ]

        async def worker(queue: asyncio.Queue[tuple[ParsedTopic, bytes] | None]) -> None:
            while (item := await queue.get()) is not None:
                await handler.cars.handle(*item)

        started = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for i, queue in enumerate(queues):
                tg.create_task(worker(queue), name=f"bench.p3.worker[{i}]")
            for parsed, payload in messages:
                await queues[zlib.crc32(parsed.key.encode()) % len(queues)].put((parsed, payload))
            for queue in queues:
                await queue.put(None)
        seconds = time.perf_counter() - started
        stats = handler.stats
        return StatusThroughput(
            messages=len(messages),
            cars=len(cars),
            seconds=seconds,
            applied=stats.applied["status"],
            refused=sum(stats.refused.values()),
            workers=len(queues),
        )


def _signed_statuses(
    state: StateDir, cars: Sequence[CarSpec], per_car: int, clock: SystemClock, topics: Topics
) -> list[tuple[ParsedTopic, bytes]]:
    """Every car's statuses, signed with its own key, interleaved (message k of every car, then k+1)."""
    now = clock.now()
    per_vin: list[list[tuple[ParsedTopic, bytes]]] = []
    for car in cars:
        signer = Signer(state.load_car_key(car.vin), issuer=car.vin, clock=clock)
        vehicle = Vehicle.new(car.vin, car.model, car.equipment, car.home, car.rng(), now=now)
        parsed = topics.parse(topics.status(car.vin))
        per_vin.append(
            [  # a fresh registry: any increasing seq is new
                (parsed, signer.sign(MessageType.STATUS, aud=CLOUD, seq=k + 1,
                                     body=vehicle.snapshot(now, online=True, signal_pct=80)).encode())
                for k in range(per_car)
            ]
        )
    return [batch[k] for k in range(per_car) for batch in per_vin]
