"""P6 (SPEC §6, §9): mTLS cars as 3 fleet shards (`tcu-sim fleet run --shard i/3`, separate processes) against a
3-node NATS cluster (`broker.nats.NatsCluster`) on this host. Each shard starts on its own node and lists the other
two as failover targets. Measured from the outside: cars online (the shards' own progress lines), connect time,
steady CPU and RSS per car of the fleet processes and of the broker nodes (psutil over a window), and the failover
time of one node (SIGKILL node 1; until every shard reports all its cars online again).

Failover is timed from the kill to the first progress line of every shard showing all its cars online *after* the
cars of the killed node logged their `disconnected` event. (Waiting for a progress line with cars missing does not
work: at a few hundred cars they are back within one report interval, and such a line never comes.) Every wait is
bounded; when cars do not come back, the report says how many did (`failover_cars_back`).

    python -m tcu_sim.bench --p6                 # 50,000 cars (the target); --p6-cars 300 for a smoke run

If the target is not reached, the report says how many cars were online and which step stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from broker.nats import NatsCluster
from broker.pki import FleetPKI
from tcu_sim.bench._procs import BenchProcessError, ChildProcess, tcu_sim_command
from tcu_sim.clock import SystemClock
from tcu_sim.fleet import StateDir, expand_fleet, parse_fleet, provision

__all__ = ["P6Report", "failover", "run_p6"]

SHARDS = 3
_ONLINE = r"online (\d+)/(\d+)"


@dataclass
class P6Report:
    """The P6 figures; `stopped_by` names what ended the run early (None: it ran to the end)."""

    command: str
    cars: int
    cars_online: int = 0
    connect_s: float | None = None
    fleet_cpu_core: float | None = None
    fleet_rss_kib_per_car: float | None = None
    broker_cpu_core: float | None = None
    broker_rss_kib_per_car: float | None = None
    failover_s: float | None = None
    failover_cars_moved: int | None = None
    """Cars that logged the loss of their connection when the node was killed."""
    failover_cars_back: int | None = None
    """Cars online (all shards) at the end of the failover step: `cars` when every car came back."""
    stopped_by: str | None = None
    notes: list[str] = field(default_factory=list)

    def render(self) -> str:
        """The figures as text, beside the SPEC target."""
        lines = [f"P6: {self.cars_online:,} of {self.cars:,} mTLS cars online (target 50,000), 3 shards, 3 nodes"]
        for label, value, unit in (
            ("connect time (all shards online)", self.connect_s, "s"),
            ("fleet CPU steady (3 processes)", self.fleet_cpu_core, "core"),
            ("fleet RSS per car", self.fleet_rss_kib_per_car, "KiB"),
            ("broker CPU steady (3 nodes)", self.broker_cpu_core, "core"),
            ("broker RSS per car", self.broker_rss_kib_per_car, "KiB"),
            ("failover of one node (all back)", self.failover_s, "s"),
        ):
            lines.append(f"  {label:<36} {'-' if value is None else f'{value:.3f}'} {unit}")
        if self.failover_cars_moved is not None:
            back = "-" if self.failover_cars_back is None else f"{self.failover_cars_back:,}"
            lines.append(f"  failover: {self.failover_cars_moved:,} cars lost their node; {back} of {self.cars:,}"
                         " online afterwards")
        if self.stopped_by:
            lines.append(f"  stopped by: {self.stopped_by}")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)

    def write_json(self, path: Path) -> None:
        """Save the figures."""
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")


def _fleet_file(cars: int) -> str:
    return (
        "name: p6\nseed: 6\n"
        "defaults:\n  home_area: {center: {lat: 41.39, lon: 2.17}, radius_km: 20}\n  status_interval_s: 60\n"
        f"groups:\n  - {{name: leon, count: {cars}, model: leon, equipment: media_system}}\n"
    )


async def _cpu_and_rss(pids: list[int], window_s: float) -> tuple[float, int]:
    """CPU (cores) over `window_s` and RSS (bytes, at the end) of the processes `pids` together."""
    processes = [psutil.Process(pid) for pid in pids]
    before = [p.cpu_times() for p in processes]
    await asyncio.sleep(window_s)  # a measurement window, not a wait for something
    after = [p.cpu_times() for p in processes]
    busy = sum(a.user + a.system - b.user - b.system for a, b in zip(after, before, strict=True))
    return busy / window_s, sum(p.memory_info().rss for p in processes)


async def _all_online(shards: list[ChildProcess], sizes: list[int], timeout: float, since: float) -> float:
    """Wait until every shard printed `online n/n` after `since` (time.monotonic()); how long after `since` the
    last did. `timeout` bounds the whole wait, not each shard's."""
    deadline = time.monotonic() + timeout
    last = since
    for shard, size in zip(shards, sizes, strict=True):
        left = max(deadline - time.monotonic(), 0.001)
        at, _ = await shard.wait_for_line(rf"online {size}/{size}\b", left, since=since)
        last = max(last, at)
    return last - since


async def failover(
    kill: Callable[[], Awaitable[None]], node: int, shards: list[ChildProcess], sizes: list[int], report: P6Report,
    timeout: float,
) -> None:
    """`kill()` node `node` and time until every car is online again (see the module doc); fills the failover
    figures, or `stopped_by` (with how many cars came back) when they were not all back within `timeout`."""
    before = [shard.events["disconnected"] for shard in shards]
    killed_at = time.monotonic()
    await kill()
    # The shard whose first node this was loses all its cars (the others only hold it as a failover target).
    try:
        await shards[node].wait_for_event("disconnected", before[node] + sizes[node], timeout)
        lost_at = time.monotonic()
        report.failover_s = await _all_online(shards, sizes, max(timeout - (lost_at - killed_at), 0.001), lost_at)
        report.failover_s += lost_at - killed_at
    except BenchProcessError as exc:
        report.stopped_by = f"failover: {exc}".splitlines()[0]
    finally:
        report.failover_cars_moved = sum(s.events["disconnected"] - b for s, b in zip(shards, before, strict=True))
        report.failover_cars_back = sum(_last_online(shard, since=killed_at) for shard in shards)


async def run_p6(
    cars: int,
    *,
    command: str,
    window_s: float = 30.0,
    connect_timeout_s: float = 600.0,
    failover_timeout_s: float = 300.0,
    max_handshakes: int = 32,
    keep: bool = False,
    progress: Callable[[str], None] = lambda _line: None,
) -> P6Report:
    """Run P6 with `cars` cars; a report even when a step fails (`stopped_by`)."""
    report = P6Report(command=command, cars=cars)
    with contextlib.ExitStack() as cleanup:
        if keep:
            root = Path(tempfile.mkdtemp(prefix="tcu-p6-"))
        else:
            root = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="tcu-p6-")))
            # JetStream keeps several files per car session: removing them takes a while (minutes at 50,000 cars).
            cleanup.callback(progress, f"removing {root} (the cluster's JetStream files)")
        if keep:
            report.notes.append(f"files kept in {root}")
        fleet_file = root / "p6.yaml"
        fleet_file.write_text(_fleet_file(cars), encoding="utf-8")
        config = parse_fleet(fleet_file.read_text(encoding="utf-8"), source=str(fleet_file))
        state = StateDir(root / "state")
        progress(f"provisioning {cars:,} cars (keys and one certificate each)")
        provision(config, state, clock=SystemClock())
        vins = [car.vin for car in expand_fleet(config)]
        cluster = NatsCluster(root / "nats", FleetPKI(state.pki_dir), vins, nodes=SHARDS)
        async with contextlib.AsyncExitStack() as stack:
            progress("starting the 3-node NATS cluster")
            await stack.enter_async_context(cluster)
            shards: list[ChildProcess] = []
            started = time.monotonic()
            for index in range(SHARDS):
                order = [(index + k) % SHARDS for k in range(SHARDS)]
                argv = [
                    *tcu_sim_command(), "fleet", "run", str(fleet_file),
                    "--broker", ",".join(cluster.urls[node] for node in order),
                    "--state", str(state.root), "--shard", f"{index + 1}/{SHARDS}",
                    "--max-handshakes", str(max_handshakes), "--report-every", "1",
                ]  # fmt: skip
                shard = ChildProcess(f"fleet-{index + 1}", argv, log_path=root / f"fleet-{index + 1}.log")
                shards.append(await stack.enter_async_context(shard))
            sizes = [sum(1 for i in range(cars) if i % SHARDS == s) for s in range(SHARDS)]
            sizes = await _shard_sizes(shards, connect_timeout_s) or sizes
            try:
                report.connect_s = await _all_online(shards, sizes, connect_timeout_s, started)
                report.cars_online = cars
            except BenchProcessError as exc:
                report.cars_online = sum(_last_online(shard) for shard in shards)
                report.stopped_by = f"connect: {exc}".splitlines()[0]
                return report
            progress(f"all {cars:,} cars online after {report.connect_s:.1f} s; measuring {window_s:g} s")
            fleet_pids = [shard.pid for shard in shards]
            node_pids = [pid for i in range(SHARDS) if (pid := cluster.pid(i)) is not None]
            (fleet_cpu, fleet_rss), (broker_cpu, broker_rss) = await asyncio.gather(
                _cpu_and_rss(fleet_pids, window_s), _cpu_and_rss(node_pids, window_s)
            )
            report.fleet_cpu_core, report.broker_cpu_core = fleet_cpu, broker_cpu
            report.fleet_rss_kib_per_car = fleet_rss / 1024 / cars
            report.broker_rss_kib_per_car = broker_rss / 1024 / cars
            progress("killing node n1 (failover)")
            await failover(lambda: cluster.kill_node(1), 1, shards, sizes, report, failover_timeout_s)
            if report.stopped_by is None:
                progress(f"all {report.failover_cars_back:,} cars back after {report.failover_s:.1f} s")
    return report


async def _shard_sizes(shards: list[ChildProcess], timeout: float) -> list[int] | None:
    """Each shard's car count, from its first progress line."""
    sizes = []
    for shard in shards:
        try:
            _, match = await shard.wait_for_line(_ONLINE, timeout)
        except BenchProcessError:
            return None
        sizes.append(int(match.group(2)))
    return sizes


def _last_online(shard: ChildProcess, *, since: float = 0.0) -> int:
    """Cars online in the shard's last progress line read at or after `since` (0 when there is none)."""
    found = [int(m.group(1)) for at, line in shard.lines() if at >= since and (m := re.search(_ONLINE, line))]
    return found[-1] if found else 0


def summary(report: P6Report) -> dict[str, Any]:
    """The report as a dict (for the bench's JSON)."""
    return asdict(report)
