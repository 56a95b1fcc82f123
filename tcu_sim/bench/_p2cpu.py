"""The cloud's CPU per app command (SPEC P2), measured alone and small: CPU seconds, not latency, so that it means
something on a shared machine too.

    .venv/bin/python -m tcu_sim.bench._p2cpu --cars 60 --users 60 --commands 300 --rate 50
    .venv/bin/python -m tcu_sim.bench._p2cpu --commands 500 --py-spy prof/   # and a py-spy profile of the cloud

The same set-up as the bench's app round trip (`tcu_sim.bench._app`): the bench broker (TLS, ACLs), a small fleet
as `tcu-sim fleet run`, the cloud as `tcu-sim cloud run` (SQLite), app users that sign up and enrol one car each.
Then `commands` lock/unlock commands (S-PIN) at `rate` per second, cycling over the users (60 by default, as the
bench: each user below the cloud's per-user command rate); the figure is the cloud process's CPU time (user +
system, all threads, psutil) over the commands divided by their number, taken from just before the first command
until the last one's final push reached its app. The cloud's idle cost over the same time (car statuses and
keepalives of a small fleet) is measured just before and subtracted. `--py-spy` samples only the threads that
hold the GIL (`--gil`): the Python work; time in C with the GIL released (SQLite, libsodium, TLS) is not in it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tcu_sim.bench._app import CloudProcess, app_round_trips, bench_app_users, connected_apps, enrol_users
from tcu_sim.bench._report import percentile
from tcu_sim.bench._run import BenchOptions, FleetProcess
from tcu_sim.bench._setup import BenchBroker, bench_ports, prepare_fleet
from tcu_sim.logging import configure_logging

__all__ = ["AppCommandCpu", "measure_app_command_cpu"]


@dataclass(frozen=True, slots=True)
class AppCommandCpu:
    """What one run measured."""

    commands: int
    succeeded: int
    rate_per_s: float
    cloud_cpu_s: float
    cloud_system_s: float
    idle_cpu_s: float
    elapsed_s: float
    p50_ms: float
    p99_ms: float
    outcomes: dict[str, int]

    @property
    def cpu_ms_per_command(self) -> float:
        """Cloud CPU per command, the idle cost of the same time subtracted."""
        return max(0.0, self.cloud_cpu_s - self.idle_cpu_s) / max(1, self.commands) * 1000

    def summary(self) -> str:
        """One line for people."""
        return (
            f"{self.succeeded}/{self.commands} commands at {self.rate_per_s:g}/s: cloud CPU"
            f" {self.cpu_ms_per_command:.2f} ms per command ({self.cloud_cpu_s:.2f} s, of which system"
            f" {self.cloud_system_s:.2f} s, over {self.elapsed_s:.1f} s,"
            f" idle {self.idle_cpu_s:.2f} s); round trip p50 {self.p50_ms:.1f} / p99 {self.p99_ms:.1f} ms"
            " (latency means little on a loaded machine)"
        )


async def _py_spy(pid: int, seconds: float, out: Path) -> asyncio.subprocess.Process | None:
    py_spy = Path(sys.executable).with_name("py-spy")
    if not py_spy.is_file():
        print("py-spy not found next to the interpreter: no profile", file=sys.stderr)
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    return await asyncio.create_subprocess_exec(
        str(py_spy), "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))), "--rate", "250",
        "--format", "raw", "--nonblocking", "--threads", "--gil", "--output", str(out),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )


async def measure_app_command_cpu(
    *, cars: int = 60, users: int = 60, commands: int = 300, rate_per_s: float = 50.0, profile: Path | None = None,
    workdir: Path | None = None,
) -> AppCommandCpu:
    """Run the set-up of the module docstring and measure."""
    if users > cars:
        raise ValueError("every app user needs a car of its own: users <= cars")
    own = workdir is None
    root = workdir or Path(tempfile.mkdtemp(prefix="tcu-sim-p2cpu-"))
    try:
        fleet = prepare_fleet(root, cars, root / "state")
        port, app_port = bench_ports(2, random.Random())
        names = bench_app_users(users)
        broker = BenchBroker(root / "broker", fleet.pki, port=port, app_port=app_port, app_users=names)
        options = BenchOptions(max_handshakes=8)
        async with broker, FleetProcess(fleet, broker, options, log_path=root / "fleet.log") as fleet_proc:
            await fleet_proc.wait_for_line(r"cars online after", 120)
            async with CloudProcess(broker, fleet.state, root / "cloud.db") as cloud:
                await cloud.wait_ready(60)
                await cloud.wait_idle()
                async with connected_apps(broker, names) as apps:
                    rig = await enrol_users(broker, apps, fleet.vins[:users])
                    # warm-up: one command per user (sessions, caches), not measured
                    await app_round_trips(rig, rate_per_s=rate_per_s, count=users, warmup=True)
                    await cloud.wait_idle(timeout=30)
                    ps = cloud.psutil()
                    window = commands / rate_per_s
                    before = ps.cpu_times()
                    await asyncio.sleep(min(window, 5.0))
                    idle_rate = (sum(ps.cpu_times()[:2]) - sum(before[:2])) / min(window, 5.0)
                    spy = None if profile is None else await _py_spy(cloud.pid, window + 1, profile)
                    before = ps.cpu_times()
                    started = time.monotonic()
                    trips = await app_round_trips(rig, rate_per_s=rate_per_s, count=commands, warmup=False)
                    elapsed = time.monotonic() - started
                    after = ps.cpu_times()
                    if spy is not None:
                        await spy.wait()
        rtts = [s * 1000 for s in trips.rtts_s]
        return AppCommandCpu(
            commands=commands, succeeded=len(rtts), rate_per_s=rate_per_s,
            cloud_cpu_s=sum(after[:2]) - sum(before[:2]), cloud_system_s=after.system - before.system,
            idle_cpu_s=idle_rate * elapsed, elapsed_s=elapsed,
            p50_ms=percentile(rtts, 50), p99_ms=percentile(rtts, 99), outcomes=dict(trips.outcomes),
        )
    finally:
        if own:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """`python -m tcu_sim.bench._p2cpu`."""
    parser = argparse.ArgumentParser(prog="python -m tcu_sim.bench._p2cpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cars", type=int, default=60)
    parser.add_argument("--users", type=int, default=60)
    parser.add_argument("--commands", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--py-spy", type=Path, default=None, help="write a raw py-spy profile of the cloud here")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    configure_logging("WARNING")
    result = asyncio.run(
        measure_app_command_cpu(
            cars=args.cars, users=args.users, commands=args.commands, rate_per_s=args.rate, profile=args.py_spy
        )
    )
    print(json.dumps({**asdict(result), "cpu_ms_per_command": result.cpu_ms_per_command}) if args.json
          else result.summary())
    return 0 if result.succeeded == result.commands else 1


if __name__ == "__main__":
    sys.exit(main())
