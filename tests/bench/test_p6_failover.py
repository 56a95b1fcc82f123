"""The failover step of P6 (`tcu_sim.bench._p6.failover`) over stand-in shard processes that print what
`tcu-sim fleet run --report-every 1` prints: progress lines `online n/m, published k` and JSON log events.

The first 300-car run hung here: the killed node's cars logged `disconnected` and were back within one progress
interval, so no progress line ever showed cars missing, and the bench waited for one. Now the step ends when
every car is back, and a car that never comes back ends it at the timeout with a count of the cars back."""

from __future__ import annotations

import sys
from pathlib import Path

from tcu_sim.bench._p6 import P6Report, failover
from tcu_sim.bench._procs import ChildProcess

SIZE = 3

# A shard: full progress lines every 0.05 s; the one that loses its node (argv[2] == "lost") waits for the
# trigger file, logs one `disconnected` per car, then shows all cars online again at once ("back") or none.
SHARD = """
import json, os, sys, time
size, role, trigger = int(sys.argv[1]), sys.argv[2], sys.argv[3]
lost = False
while True:
    if role != "steady" and not lost and os.path.exists(trigger):
        lost = True
        for n in range(size):
            print(json.dumps({"vin": f"V{n}", "event": "disconnected", "level": "info"}), file=sys.stderr)
    online = 0 if lost and role == "never" else size
    print(f"online {online}/{size}, published 0", file=sys.stderr, flush=True)
    time.sleep(0.05)
"""


async def _run(tmp_path: Path, role: str, timeout: float) -> P6Report:
    trigger = tmp_path / "killed"
    report = P6Report(command="test", cars=3 * SIZE)
    shards = [
        ChildProcess(f"shard-{i}", [sys.executable, "-c", SHARD, str(SIZE), role if i == 1 else "steady",
                                    str(trigger)], log_path=tmp_path / f"shard-{i}.log")
        for i in range(3)
    ]

    async def kill() -> None:
        trigger.touch()

    for shard in shards:
        await shard.__aenter__()
    try:
        for shard in shards:
            await shard.wait_for_line(rf"online {SIZE}/{SIZE}\b", 20)
        await failover(kill, 1, shards, [SIZE] * 3, report, timeout)
    finally:
        for shard in shards:
            await shard.stop(grace_s=5)
    return report


async def test_failover_ends_when_the_cars_are_back_within_one_progress_interval(tmp_path: Path) -> None:
    report = await _run(tmp_path, "back", timeout=30)
    assert report.stopped_by is None
    assert report.failover_s is not None
    assert (report.failover_cars_moved, report.failover_cars_back) == (SIZE, 3 * SIZE)
    assert f"{SIZE} cars lost their node; {3 * SIZE} of {3 * SIZE} online afterwards" in report.render()


async def test_failover_stops_at_its_timeout_and_says_how_many_cars_came_back(tmp_path: Path) -> None:
    report = await _run(tmp_path, "never", timeout=2)
    assert report.stopped_by is not None
    assert report.stopped_by.startswith("failover:")
    assert report.failover_s is None
    assert (report.failover_cars_moved, report.failover_cars_back) == (SIZE, 2 * SIZE)
