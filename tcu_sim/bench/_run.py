"""One benchmark run: per fleet size, a fresh broker, the fleet as its own process, and every figure in turn.

Per size, in this order (each step bounded in time):
1. connect (P4 cold start): spawn `tcu-sim fleet run`; time until a cloud-identity observer has seen every
   car's `online`, from the fleet's "fleet started" log line (and from the spawn, and the fleet's own figure);
2. steady state (P1): after a settling pause, the fleet process's CPU over a window (psutil), its RSS per car;
3. command round trip as the cloud signs it, straight to the cars (no cloud handler), at a fixed rate;
4. the full app round trip (P2) through `tcu-sim cloud run` as a third process;
5. reconnect storm (P4): kill the broker, wait, start it again; time until every car is back online.
Then, once, the cloud's status throughput (P3).

Cars that take part in the app round trip are set aside for it (per size, never used before): the cloud numbers
its commands per car from 1, and a car refuses any command `seq` not above the highest it accepted, so a car
that took the driver's (larger) numbers could not take the cloud's any more.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import structlog

from tcu_sim.bench._app import CloudProcess, app_round_trips, bench_app_users, connected_apps, enrol_users
from tcu_sim.bench._commands import RoundTrips, drive_commands
from tcu_sim.bench._observer import ConnectionObserver
from tcu_sim.bench._procs import BenchProcessError, ChildProcess, tcu_sim_command
from tcu_sim.bench._report import BenchReport, SizeReport, at_least, at_most, percentile
from tcu_sim.bench._setup import BenchBroker, BenchFleet, bench_ports, prepare_fleet, raise_open_files_limit
from tcu_sim.transport import Backoff

__all__ = ["BenchOptions", "FleetProcess", "p3_figures", "run_bench", "run_size"]

log = structlog.get_logger("tcu_sim.bench")

KIB = 1024


@dataclass(slots=True)
class BenchOptions:
    """Everything a run can be told; the defaults are the full `make bench`."""

    sizes: list[int] = field(default_factory=lambda: [1000, 5000, 10000])
    max_handshakes: int = 32
    status_interval_s: float = 60.0
    settle_s: float = 5.0
    cpu_window_s: float = 30.0
    command_rate: float = 50.0
    commands: int = 1000
    app_users: int = 60
    app_commands: int = 1000
    outage_s: float = 5.0
    p3_cars: int = 1000
    p3_per_car: int = 20
    connect_timeout_s: float = 300.0
    storm_timeout_s: float = 240.0
    seed: int = 6000
    app: bool = True
    storm: bool = True
    p3: bool = True
    keep: bool = False
    broker_nodelay: bool = False
    #: Record py-spy profiles (raw collapsed stacks) of the fleet and cloud processes into this directory.
    profile_dir: Path | None = None
    workdir: Path | None = None
    fleet_env: dict[str, str] = field(default_factory=dict)
    progress: Callable[[str], None] = lambda _line: None


class FleetProcess(ChildProcess):
    """`tcu-sim fleet run` for a bench fleet against the bench broker; its log goes to `log_path`."""

    def __init__(self, fleet: BenchFleet, broker: BenchBroker, options: BenchOptions, *, log_path: Path) -> None:
        env = {**os.environ, **options.fleet_env} if options.fleet_env else None
        super().__init__(
            "fleet",
            [
                *tcu_sim_command(), "fleet", "run", str(fleet.file),
                "--broker", f"mqtts://{broker.host}:{broker.port}",
                "--state", str(fleet.state.root),
                "--max-handshakes", str(options.max_handshakes),
                "--report-every", "0",
            ],
            log_path=log_path,
            env=env,
        )


def _profile(options: BenchOptions, pid: int, name: str, seconds: float) -> asyncio.Task[None] | None:
    """Start `py-spy record` on `pid` for `seconds` (when profiling was asked for); a task that ends with it."""
    if options.profile_dir is None:
        return None
    options.profile_dir.mkdir(parents=True, exist_ok=True)
    py_spy = Path(sys.executable).with_name("py-spy")
    if not py_spy.is_file():
        log.warning("bench: py-spy not found next to the interpreter; no profile", name=name)
        return None
    argv = [str(py_spy), "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))), "--rate", "200",
            "--format", "raw", "--nonblocking", "--threads", "--output", str(options.profile_dir / f"{name}.txt")]

    async def record() -> None:
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        try:
            async with asyncio.timeout(seconds + 30):
                await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

    return asyncio.create_task(record(), name=f"bench.py-spy[{name}]")


async def _finish(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        with contextlib.suppress(Exception):
            await task


async def _settle(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel whatever of `tasks` still runs (the step around them failed or was interrupted) and collect their
    outcomes, so that none is left behind or reported as never retrieved."""
    running = [t for t in tasks if t is not None]
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)


@dataclass(frozen=True, slots=True)
class _CpuMark:
    """CPU seconds used so far: the fleet process, its event-loop thread, the broker, the whole machine."""

    fleet: float
    loop: float
    broker: float
    machine: float
    at: float

    @classmethod
    def take(cls, fleet: psutil.Process, broker: psutil.Process) -> _CpuMark:
        f, b, m = fleet.cpu_times(), broker.cpu_times(), psutil.cpu_times()
        # The main thread's id is the process id: the thread that runs the event loop, under the GIL.
        loop = next((t.user_time + t.system_time for t in fleet.threads() if t.id == fleet.pid), 0.0)
        busy = sum(m) - m.idle - getattr(m, "iowait", 0.0)
        return cls(f.user + f.system, loop, b.user + b.system, busy, time.monotonic())


def _connect_cpu(report: SizeReport, prefix: str, what: str, before: _CpuMark, after: _CpuMark, cars: int) -> None:
    """CPU per car of a connect phase, and the floor it sets on an idle 2-core machine (what the wall-clock
    figure would approach without other load): the loop thread cannot go faster than its own CPU time, and
    fleet and broker together cannot use more than the two cores."""
    fleet, loop, broker = after.fleet - before.fleet, after.loop - before.loop, after.broker - before.broker
    elapsed = max(after.at - before.at, 1e-9)
    others = max(0.0, (after.machine - before.machine) - fleet - broker) / elapsed
    report.add(f"{prefix}.cpu_fleet", f"{what}: fleet CPU per car", fleet / cars * 1000, "ms",
               note=f"of which its event-loop thread {loop / cars * 1000:.2f} ms")
    report.add(f"{prefix}.cpu_broker", f"{what}: broker CPU per car", broker / cars * 1000, "ms")
    report.add(f"{prefix}.floor", f"{what}: CPU-bound floor, idle 2 cores", max(loop, (fleet + broker) / 2), "s",
               note=f"other load meanwhile {others:.2f} core")


async def _cpu_over(processes: dict[str, psutil.Process], window_s: float) -> dict[str, float]:
    """Cores each process used over `window_s` (and the whole machine's busy cores, key "machine")."""
    before = {name: p.cpu_times() for name, p in processes.items()}
    machine_before = psutil.cpu_times()
    started = time.monotonic()
    await asyncio.sleep(window_s)
    elapsed = time.monotonic() - started
    out: dict[str, float] = {}
    for name, p in processes.items():
        after = p.cpu_times()
        b = before[name]
        out[name] = (after.user + after.system - b.user - b.system) / elapsed
    machine_after = psutil.cpu_times()
    busy_after = sum(machine_after) - machine_after.idle - getattr(machine_after, "iowait", 0.0)
    busy_before = sum(machine_before) - machine_before.idle - getattr(machine_before, "iowait", 0.0)
    out["machine"] = (busy_after - busy_before) / elapsed
    # Everything else on the machine (other jobs; the bench process itself included): on a shared machine the
    # figures of a window only mean something next to this.
    out["others"] = max(0.0, out["machine"] - sum(v for k, v in out.items() if k != "machine"))
    return out


def _rtt_figures(
    report: SizeReport, prefix: str, label: str, trips: RoundTrips, cars: int, spec: str, others: float | None = None
) -> None:
    ms = [r * 1000 for r in trips.rtts_s]
    p50, p99 = percentile(ms, 50), percentile(ms, 99)
    small = cars <= 1000
    if small:
        report.add(f"{prefix}.p50", f"{label} p50", p50, "ms", target=f"{spec} ≤ 5 ms @1k", check=at_most(5))
        report.add(f"{prefix}.p99", f"{label} p99", p99, "ms", target=f"{spec} ≤ 25 ms @1k", check=at_most(25),
                   note=_others_note(others))
    else:
        report.add(f"{prefix}.p50", f"{label} p50", p50, "ms", note="SPEC sets p50 only @1k")
        report.add(f"{prefix}.p99", f"{label} p99", p99, "ms", target=f"{spec} ≤ 100 ms @10k", check=at_most(100),
                   note=_others_note(others))
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(trips.outcomes.items()))
    if others is not None:
        report.details.setdefault(f"{prefix}_others_core", round(others, 3))
    report.add(
        f"{prefix}.ok", f"{label}: succeeded / sent", float(trips.succeeded), "commands",
        target=f"= {trips.sent}", check=at_least(trips.sent),
        note=f"{outcomes}; lost {trips.lost}" + (f"; bad results {trips.bad_results}" if trips.bad_results else ""),
    )
    report.details[prefix] = {
        "sent": trips.sent, "succeeded": trips.succeeded, "lost": trips.lost, "outcomes": dict(trips.outcomes),
        "send_s": round(trips.send_s, 3), "p50_ms": p50, "p90_ms": percentile(ms, 90), "p99_ms": p99,
        "max_ms": max(ms, default=float("nan")), "mean_ms": sum(ms) / len(ms) if ms else float("nan"),
        "phases_p50_ms": {k: round(percentile(v, 50) * 1000, 3) for k, v in trips.phases.items()},
        "phases_p99_ms": {k: round(percentile(v, 99) * 1000, 3) for k, v in trips.phases.items()},
    }


def _others_note(others: float | None) -> str:
    return "" if others is None else f"other load meanwhile {others:.2f} core"


async def run_size(
    fleet: BenchFleet,
    workdir: Path,
    options: BenchOptions,
    *,
    app_vins: Sequence[str],
    driver_vins: Sequence[str],
    rng: random.Random,
) -> SizeReport:
    """Every per-size figure for `fleet` (see the module docstring)."""
    size = len(fleet.cars)
    report = SizeReport(size)
    say = options.progress
    cap = Backoff().cap_s  # `tcu-sim fleet run` uses the default backoff
    users = bench_app_users(len(app_vins))
    port, app_port = bench_ports(2, rng)
    broker = BenchBroker(
        workdir / f"broker-{size}", fleet.pki, port=port, app_port=app_port, app_users=users,
        tcp_nodelay=options.broker_nodelay,
    )
    async with broker, ConnectionObserver(broker) as observer:
        await observer.wait_connected(15)
        observer.watch(fleet.vins)
        broker_proc = psutil.Process(broker.pid)
        async with FleetProcess(fleet, broker, options, log_path=workdir / f"fleet-{size}.log") as proc:
            # 1. connect
            await proc.wait_for_event("fleet started", 1, options.connect_timeout_s)
            started = proc.first_seen["fleet started"]
            fleet_ps = proc.psutil()
            mark = _CpuMark.take(fleet_ps, broker_proc)
            last_online = await observer.wait_all_online(options.connect_timeout_s)
            online_mark = _CpuMark.take(fleet_ps, broker_proc)
            _, match = await proc.wait_for_line(r"cars online after ([0-9.]+) s", 60)
            connect_s = last_online - started
            report.add("P4.connect", "connect: all online (observer)", connect_s, "s", target="≤ 60 s @10k",
                       check=at_most(60), note=f"max {options.max_handshakes} handshakes at once")
            report.add("P4.connect_fleet", "connect: fleet's own figure", float(match.group(1)), "s")
            report.add("P4.cold", "cold start from process spawn", last_online - proc.started_at, "s",
                       note="incl. interpreter, state check, key loading")
            report.add("P4.rate", "connect rate (peak per second)", observer.peak_rate(started), "cars/s")
            report.details["connect_curve_per_5s"] = observer.curve(started)
            _connect_cpu(report, "P4", "connect", mark, online_mark, size)
            say(f"{size} cars: all online {connect_s:.1f} s after start")

            # 2. steady state
            await asyncio.sleep(options.settle_s)
            profile = _profile(options, proc.pid, f"{size}-fleet-steady", options.cpu_window_s)
            try:
                cpu = await _cpu_over({"fleet": fleet_ps, "broker": broker_proc}, options.cpu_window_s)
                await _finish(profile)
            finally:
                await _settle(profile)
            rss = fleet_ps.memory_info().rss
            report.add("P1.cpu", "fleet CPU, steady state", cpu["fleet"], "core", target="≤ 0.5 core @10k",
                       check=at_most(0.5), note=f"{options.cpu_window_s:g} s window; baseline 0.76 @10k")
            report.add("P1.rss_car", "fleet RSS per car", rss / size / KIB, "KiB", target="≤ 50 KiB",
                       check=at_most(50), note="whole process RSS / cars")
            report.add("P1.rss", "fleet RSS total", rss / KIB / KIB, "MiB")
            report.add("P1.online", "cars online during the window", float(observer.online_count), "cars",
                       target=f"= {size}", check=at_least(size))
            report.add("P1.others", "other CPU load on the machine", cpu["others"], "core",
                       note="not fleet or broker, during the window (2 cores in all)")
            report.details["steady_cpu"] = {k: round(v, 4) for k, v in cpu.items()}
            say(f"{size} cars: fleet {cpu['fleet']:.3f} core, {rss / size / KIB:.1f} KiB/car")

            # 3. command round trip, cloud-signed, no handler
            cpu_task = asyncio.create_task(
                _cpu_over({"fleet": fleet_ps, "broker": broker_proc}, options.commands / options.command_rate)
            )
            profile = _profile(options, proc.pid, f"{size}-fleet-commands", options.commands / options.command_rate)
            try:
                trips = await drive_commands(
                    broker, fleet.state, driver_vins, rate_per_s=options.command_rate, count=options.commands,
                    rng=rng,
                )
                load_cpu = await cpu_task
                await _finish(profile)
            finally:
                await _settle(cpu_task, profile)
            _rtt_figures(report, "P1.rtt", "command round trip (driver)", trips, size, "P2", load_cpu["others"])
            report.add("P1.cpu_load", f"fleet CPU at {options.command_rate:g} commands/s", load_cpu["fleet"], "core")
            report.details["command_cpu"] = {k: round(v, 4) for k, v in load_cpu.items()}
            say(f"{size} cars: driver p50 {report.value('P1.rtt.p50'):.1f} ms p99 {report.value('P1.rtt.p99'):.1f} ms")

            # 4. app → cloud → car → app
            if options.app and app_vins:
                await _app_figures(
                    report, broker, fleet, workdir, options, app_vins, {"fleet": fleet_ps, "broker": broker_proc}
                )
            else:
                report.missing("P2.p50", "app round trip p50", "ms", "skipped (--no-app)")

            # 5. reconnect storm
            if options.storm:
                await _storm(report, broker, observer, proc, options, cap)
            else:
                report.missing("P4.storm", "storm: all back after restart", "s", "skipped (--no-storm)")
            report.details["fleet_log_events"] = dict(proc.events.most_common(12))
            if not proc.running:
                raise BenchProcessError(f"the fleet process ended during the run:\n{proc.tail()}")
    return report


async def _app_figures(
    report: SizeReport, broker: BenchBroker, fleet: BenchFleet, workdir: Path, options: BenchOptions,
    app_vins: Sequence[str], watched: dict[str, psutil.Process],
) -> None:
    size = len(fleet.cars)
    say = options.progress
    try:
        async with CloudProcess(broker, fleet.state, workdir / f"cloud-{size}.db") as cloud:
            await cloud.wait_ready(60)
            backlog_s = await cloud.wait_idle()
            async with connected_apps(broker, bench_app_users(len(app_vins))) as apps:
                rig = await enrol_users(broker, apps, app_vins)
                await cloud.wait_idle(timeout=30)
                cloud_ps = cloud.psutil()
                cpu_task = asyncio.create_task(
                    _cpu_over({"cloud": cloud_ps, **watched}, options.app_commands / options.command_rate)
                )
                profile = _profile(options, cloud.pid, f"{size}-cloud-app", options.app_commands / options.command_rate)
                try:
                    trips = await app_round_trips(rig, rate_per_s=options.command_rate, count=options.app_commands)
                    cloud_cpu = await cpu_task
                    await _finish(profile)
                finally:
                    await _settle(cpu_task, profile)
        _rtt_figures(report, "P2", "app round trip", trips, size, "P2", cloud_cpu["others"])
        report.add("P2.cloud_cpu", f"cloud CPU at {options.command_rate:g} app commands/s", cloud_cpu["cloud"],
                   "core")
        report.add("P2.cloud_cpu_ms_per_command", "cloud CPU per app command",
                   cloud_cpu["cloud"] / options.command_rate * 1000, "ms", target="≤ 1.5 ms", check=at_most(1.5),
                   note="its core share over the commands' window / command rate")
        report.details["P2"]["start_backlog_s"] = round(backlog_s, 2)
        report.details["P2"]["setup_s"] = round(rig.setup_s, 2)
        report.details["P2"]["users"] = len(app_vins)
        say(f"{size} cars: app p50 {report.value('P2.p50'):.1f} ms p99 {report.value('P2.p99'):.1f} ms")
    except (BenchProcessError, TimeoutError, OSError, RuntimeError) as exc:
        # Not measured is a result too: say why, keep the other figures.
        report.missing("P2.p50", "app round trip p50", "ms", f"failed: {str(exc)[:200]}")
        report.details["P2_error"] = str(exc)
        log.warning("bench app round trip failed", error=str(exc))


async def _storm(
    report: SizeReport, broker: BenchBroker, observer: ConnectionObserver, proc: ChildProcess,
    options: BenchOptions, cap: float,
) -> None:
    size = report.cars
    failed_before = proc.events["connect failed"]
    killed_at = time.monotonic()
    await broker.kill()
    observer.reset()
    await asyncio.sleep(options.outage_s)
    await broker.start()
    up_at = time.monotonic()
    fleet_ps, broker_ps = proc.psutil(), psutil.Process(broker.pid)
    mark = _CpuMark.take(fleet_ps, broker_ps)
    try:
        last = await observer.wait_all_online(options.storm_timeout_s)
    except TimeoutError as exc:
        report.add("P4.storm", "storm: all back after restart", None, "s", target=f"≤ {2 * cap:g} s (2x cap)",
                   note=str(exc))
        return
    report.add("P4.storm", "storm: all back after restart", last - up_at, "s", target=f"≤ {2 * cap:g} s (2x cap)",
               check=at_most(2 * cap), note=f"broker down {options.outage_s:g} s; backoff cap {cap:g} s")
    _connect_cpu(report, "P4.storm", "storm", mark, _CpuMark.take(fleet_ps, broker_ps), size)
    report.add("P4.storm_rate", "storm: peak reconnects per second", observer.peak_rate(up_at), "cars/s")
    failed = proc.events["connect failed"] - failed_before
    report.add("P4.storm_failed", "storm: failed connect attempts", float(failed), "attempts",
               note="while the broker was down or busy")
    report.details["storm"] = {"kill_to_all_s": round(last - killed_at, 3), "restart_s": round(up_at - killed_at, 3),
                               "curve_per_5s": observer.curve(up_at)}
    options.progress(f"{size} cars: back {last - up_at:.1f} s after the broker restart")


def _machine() -> dict[str, str]:
    load = os.getloadavg()
    return {
        "host": f"{platform.node()} {platform.machine()}, {psutil.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB",
        "python": platform.python_version(),
        "load before run": f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
    }


async def run_bench(options: BenchOptions, command: str) -> BenchReport:
    """The whole run (every size, then P3); temporary files are removed afterwards unless `options.keep`."""
    report = BenchReport(started_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"), command=command)
    report.machine = _machine()
    soft, hard = raise_open_files_limit()
    report.machine["open files"] = f"{soft} (hard {hard})"
    sizes = sorted(set(options.sizes))
    if sizes and sizes[-1] + 512 > soft:
        report.errors.append(f"open-file limit {soft} is low for {sizes[-1]} cars (the broker needs one per car)")
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="tcu-sim-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(options.seed)
    say = options.progress
    try:
        state_dir = workdir / "state"
        started = time.monotonic()
        # One state for every size: the fleet expands stably, so the largest fleet holds every smaller one.
        fleets = {size: prepare_fleet(workdir, size, state_dir, status_interval_s=options.status_interval_s)
                  for size in sorted(sizes, reverse=True)}
        report.machine["provisioning"] = f"{max(sizes, default=0)} cars in {time.monotonic() - started:.1f} s"
        say(report.machine["provisioning"])
        reserved = _app_cars(fleets, sizes, options.app_users if options.app else 0)
        all_reserved = {vin for vins in reserved.values() for vin in vins}
        for size in sizes:
            fleet = fleets[size]
            driver_vins = [vin for vin in fleet.vins if vin not in all_reserved] or fleet.vins
            try:
                size_report = await run_size(
                    fleet, workdir, options, app_vins=reserved.get(size, []), driver_vins=driver_vins, rng=rng
                )
            except (BenchProcessError, TimeoutError, OSError) as exc:
                report.errors.append(f"{size} cars: {exc}")
                size_report = SizeReport(size)
                size_report.details["error"] = str(exc)
            report.sizes.append(size_report)
        if options.p3:
            await p3_figures(report.shared, workdir, options)
    finally:
        if not options.keep and options.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
        elif options.keep:
            report.machine["workdir"] = str(workdir)
    return report


async def p3_figures(shared: SizeReport, workdir: Path, options: BenchOptions) -> None:
    """SPEC P3 (`tcu_sim.bench._p3`): signed statuses published to a real Mosquitto and drained by one cloud
    process, every message accounted for."""
    from tcu_sim.bench._p3 import measure_status_throughput  # loads the whole cloud: only when P3 runs

    messages = options.p3_cars * options.p3_per_car
    options.progress(f"P3: {messages} signed statuses from {options.p3_cars} cars through one cloud process")
    try:
        result = await measure_status_throughput(
            messages=messages, cars=options.p3_cars, workdir=workdir / "p3", timeout_s=300.0
        )
    except (TimeoutError, OSError, RuntimeError) as exc:
        shared.missing("P3.rate", "statuses verified + applied", "msg/s", f"failed: {str(exc)[:200]}",
                       target="≥ 5,000 msg/s")
        return
    shared.add("P3.rate", "statuses verified + applied", result.per_second, "msg/s", target="≥ 5,000 msg/s",
               check=at_least(5000),
               note=f"{result.published} msgs, {result.cars} cars, {result.backend}; one cloud process via Mosquitto")
    shared.add("P3.cpu_rate", "statuses per CPU second of the cloud", result.per_cpu_second, "msg/s",
               note="the rate on a core of its own")
    shared.add("P3.lost", "statuses lost or wrongly refused", float(result.lost + sum(result.refused_other.values())),
               "msgs", target="none", check=lambda value: value == 0 and result.none_lost)
    shared.details["P3"] = result.as_dict()


def _app_cars(fleets: dict[int, BenchFleet], sizes: Sequence[int], users: int) -> dict[int, list[str]]:
    """Disjoint sets of cars for each size's app round trip, from the smallest fleet (present in every size)."""
    if not sizes or users <= 0:
        return {}
    smallest = fleets[sizes[0]].vins
    per_size = max(1, min(users, len(smallest) // (2 * len(sizes))))
    out: dict[int, list[str]] = {}
    for k, size in enumerate(sizes):
        out[size] = smallest[k * per_size:(k + 1) * per_size]
    return out
