"""What every benchmark run sets up: the open-files limit, the fleet file and state, and the broker.

The broker is `broker.mosquitto.MosquittoBroker` (the generated configuration: TLS, ACLs, CRL) with two
bench-specific lines: `max_connections -1` on every listener (spelled out, although it is Mosquitto's default,
so a future default cannot cap a 10,000-car run) and persistence off. Without persistence a restarted broker
holds no stale retained `online` from before the restart, so every `online` the observer sees after a restart
was sent by a car that really came back; the cars re-subscribe on every connect either way.
"""

from __future__ import annotations

import random
import socket
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from broker.mosquitto import AclPolicy, Grant, GrantAccess, MosquittoBroker
from broker.pki import FleetPKI
from tcu_sim.clock import SystemClock
from tcu_sim.fleet import CarSpec, StateDir, expand_fleet, load_fleet, provision, raise_open_files_limit

__all__ = [
    "BenchBroker",
    "BenchFleet",
    "bench_ports",
    "prepare_fleet",
    "raise_open_files_limit",  # from tcu_sim.fleet: the bench lifts the limit as far as it goes
    "write_fleet_file",
]

FLEET_NAME = "bench"
FLEET_SEED = 6000
#: Two-key-verification models only: the app round trip (P2) enrols cars by `tkov` from the simulator.
_GROUPS = (("leon", "leon", 0.6), ("formentor", "formentor", 0.4))


def write_fleet_file(path: Path, cars: int, *, status_interval_s: float = 60.0, today: date | None = None) -> Path:
    """Write a bench fleet file of `cars` cars (Leon and Formentor with media system, around Barcelona).

    The cars are registered ten days ago, inside their free first year of services, so the cloud lets their
    users send commands. The same seed at a larger size keeps the smaller fleet's cars (expansion is stable),
    so one state directory provisioned for the largest size serves every size of a run.
    """
    registered = (today or datetime.now(UTC).date()) - timedelta(days=10)
    groups: list[dict[str, Any]] = []
    remaining = cars
    for index, (name, model, share) in enumerate(_GROUPS):
        count = remaining if index == len(_GROUPS) - 1 else min(remaining, round(cars * share))
        remaining -= count
        if count > 0:
            groups.append(
                {"name": name, "count": count, "model": model, "equipment": "media_system",
                 "registered_at": registered.isoformat()}
            )
    document = {
        "name": FLEET_NAME,
        "seed": FLEET_SEED,
        "description": f"tcu-sim bench: {cars} cars",
        "defaults": {
            "status_interval_s": f"{status_interval_s:g}s",
            "connectivity": {"profile": "good"},
            "home_area": {"center": {"lat": 41.3874, "lon": 2.1686}, "radius_km": 8},
        },
        "groups": groups,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


@dataclass(frozen=True, slots=True)
class BenchFleet:
    """A provisioned bench fleet of one size: its file, its state directory and its cars."""

    file: Path
    state: StateDir
    cars: tuple[CarSpec, ...]

    @property
    def vins(self) -> list[str]:
        """Every car's VIN, in fleet order."""
        return [car.vin for car in self.cars]

    @property
    def pki(self) -> FleetPKI:
        """The fleet PKI in the state directory (CA, broker, cloud and car certificates)."""
        return FleetPKI(self.state.pki_dir)


def prepare_fleet(
    directory: Path, cars: int, state_dir: Path, *, status_interval_s: float = 60.0, pki: bool = True
) -> BenchFleet:
    """Write the fleet file for `cars` cars into `directory` and provision (or complete) `state_dir` for it:
    car keys, the cloud key, JWKS, the manifest and, with `pki`, every certificate (CA, broker, cloud, cars)."""
    file = write_fleet_file(directory / f"fleet-{cars}.yaml", cars, status_interval_s=status_interval_s)
    specs = tuple(expand_fleet(load_fleet(file)))
    provision(list(specs), state_dir, clock=SystemClock(), pki=pki)
    if pki:
        fleet_pki = FleetPKI(StateDir(state_dir).pki_dir)
        fleet_pki.ensure_cloud()
        fleet_pki.ensure_operator()
    return BenchFleet(file, StateDir(state_dir), specs)


def bench_ports(count: int, rng: random.Random, host: str = "127.0.0.1") -> list[int]:
    """`count` free ports below the kernel's ephemeral range.

    While the broker is down in the reconnect storm, thousands of cars keep connecting to its port; if that port
    lies in the ephemeral range, one of those connects can be given the same port as its own local port and
    connect to itself (TCP simultaneous open), and the restarted broker then finds its port taken.
    """
    low = 32768
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as file:
            low = int(file.read().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    ports: list[int] = []
    for _ in range(200):
        port = rng.randrange(max(1024, low - 12000), low)
        if port in ports:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == count:
            return ports
    raise OSError(f"no {count} free ports below {low} on {host}")


# The bench's own clients, each with a certificate and rights of its own (the broker forces the client id to the
# certificate's CN, so borrowing the cloud's certificate would replace the cloud's connection).
BENCH_OBSERVER = "bench-observer"
BENCH_DRIVER = "bench-driver"
BENCH_GRANTS: dict[str, tuple[Grant, ...]] = {
    BENCH_OBSERVER: (Grant(GrantAccess.READ, "tcu/+/connection"),),
    BENCH_DRIVER: (Grant(GrantAccess.WRITE, "tcu/+/commands"), Grant(GrantAccess.READ, "tcu/+/results")),
}


class BenchBroker(MosquittoBroker):
    """`MosquittoBroker` with the bench's settings (see the module docstring); quiet about subscriptions."""

    def __init__(self, directory: Path, pki: FleetPKI, *, tcp_nodelay: bool = False, **kwargs: Any) -> None:
        self.tcp_nodelay = tcp_nodelay
        kwargs.setdefault("persistence", False)
        # "information" carries the readiness line; "notice" and "subscribe" would log 20,000 lines per start.
        kwargs.setdefault("log_types", ("error", "warning", "information"))
        kwargs.setdefault("policy", AclPolicy(named=BENCH_GRANTS))
        super().__init__(directory, pki, **kwargs)

    def _write_config(self) -> None:
        super()._write_config()
        config = self.files.config
        lines = config.read_text(encoding="utf-8").splitlines()
        out: list[str] = []
        for line in lines:
            out.append(line)
            if line.startswith("per_listener_settings") and self.tcp_nodelay:
                out.append("set_tcp_nodelay true")
            if line.startswith("listener "):
                out.append("max_connections -1")
        config.write_text("\n".join(out) + "\n", encoding="utf-8")
