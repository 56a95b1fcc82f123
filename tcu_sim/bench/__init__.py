"""The benchmark behind `make bench` (SPEC §6): `python -m tcu_sim.bench [--sizes 1000,5000] [--quick]`.

The fleet runs as its own process (`tcu-sim fleet run`) against a local Mosquitto with the generated
configuration (mutual TLS, ACLs); the cloud, when measured, as a third (`tcu-sim cloud run`). The bench process
only observes, drives and measures:

    report = await run_bench(BenchOptions(sizes=[1000]), command="...")
    print(render_table(report))

The measurement steps are importable on their own (`run_size`, `drive_commands`) so that a test can run them
on a handful of cars. The cloud's status throughput (P3) is measured in-process, one cloud handler built by
`broker.runtime` draining a real Mosquitto (`tcu_sim.bench._p3`, also `python -m tcu_sim.bench._p3`).
"""

from __future__ import annotations

from tcu_sim.bench._commands import RoundTrips, drive_commands
from tcu_sim.bench._observer import ConnectionObserver
from tcu_sim.bench._procs import BenchProcessError
from tcu_sim.bench._report import BASELINE, BenchReport, Figure, SizeReport, percentile, render_table
from tcu_sim.bench._run import BenchOptions, FleetProcess, p3_figures, run_bench, run_size
from tcu_sim.bench._setup import BenchBroker, BenchFleet, prepare_fleet, raise_open_files_limit

__all__ = [
    "BASELINE",
    "BenchBroker",
    "BenchFleet",
    "BenchOptions",
    "BenchProcessError",
    "BenchReport",
    "ConnectionObserver",
    "Figure",
    "FleetProcess",
    "RoundTrips",
    "SizeReport",
    "drive_commands",
    "p3_figures",
    "percentile",
    "prepare_fleet",
    "raise_open_files_limit",
    "render_table",
    "run_bench",
    "run_size",
]
