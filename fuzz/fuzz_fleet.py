"""Fuzz the fleet file loader (`tcu_sim.fleet.parse_fleet` and `load_fleet`): its documented error is
FleetError (a FleetConfigError naming file, line, path and problem).

The first byte chooses how the rest arrives: as text (`parse_fleet`), or as the bytes of a file
(`load_fleet`, which also checks size and UTF-8). A fleet that loads is expanded to its cars when it is
small, which must then never fail: validation is where a fleet file is refused. Inputs are kept to 1 KiB by
default (PyYAML is pure Python: a 3 KiB file takes milliseconds), enough for every section of a fleet file.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from _harness import ROOT, instrumented, mode_input, run

with instrumented():
    from tcu_sim.fleet import FleetError, expand_fleet, load_fleet, parse_fleet

TEXT, FILE = range(2)
_EXPAND_AT_MOST = 64  # cars: expanding a 100,000-car fleet on every input would make the fuzzer crawl
# The "file" is an anonymous in-memory one: nothing is left on disk, whatever way the fuzzer exits.
_FD = os.memfd_create("fuzz-fleet.yaml")
_FILE = Path(f"/proc/self/fd/{_FD}")


def test_one_input(data: bytes) -> None:
    if not data:
        return
    rest = data[1:]
    try:
        if data[0] % 2 == TEXT:
            config = parse_fleet(rest.decode("utf-8", "replace"), source="fuzz.yaml")
        else:
            os.ftruncate(_FD, 0)
            os.pwrite(_FD, rest, 0)
            config = load_fleet(_FILE)
    except FleetError:
        return
    if config.car_count <= _EXPAND_AT_MOST:
        expand_fleet(config)


def seeds() -> list[bytes]:
    files = sorted((ROOT / "fleet_configs").glob("**/*.yaml"))
    out = [mode_input(mode, f.read_bytes()) for f in files for mode in (TEXT, FILE)]
    out.append(mode_input(TEXT, b"name: tiny\nseed: 1\ngroups:\n  - {name: leon, model: leon, count: 2}\n"))
    return out


if __name__ == "__main__":
    run("fleet", test_one_input, seeds(), max_len=1024)
    sys.exit(0)
