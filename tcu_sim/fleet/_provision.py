"""Provisioning: generate and store the keys a fleet needs before it runs (the state directory of `_state`).

Idempotent: a car that already has a key keeps it, new cars are added, and the manifest keeps every car it
has ever listed (so parts or grown fleets can be provisioned into one directory). A car's registration day
is fixed when it is first provisioned. Files are written to a temporary name and renamed, private keys
created 0600 from the start, and the manifest is written last: a directory with a manifest is complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from broker.pki import CLOUD, OPERATOR, SERVER, FleetPKI, PKIError
from tcu_sim.clock import Clock
from tcu_sim.fleet._config import FleetConfig
from tcu_sim.fleet._errors import StateDirError
from tcu_sim.fleet._expand import CarSpec, expand_fleet
from tcu_sim.fleet._state import CLOUD_KID, Manifest, ManifestVehicle, StateDir
from tcu_sim.protocol import KeySet, ProtocolError, SigningKey

__all__ = ["ProvisionResult", "provision"]


@dataclass(frozen=True, slots=True)
class ProvisionResult:
    """What a provisioning run did."""

    state: StateDir
    vehicles: int
    """Cars in the manifest after the run (this run's and any provisioned before)."""
    added: tuple[str, ...]
    """VINs that got a new key in this run."""
    kept: int
    """Cars of this run whose existing key was kept."""
    cloud_key_created: bool
    certificates: int | None
    """mTLS certificates issued in this run; None when no PKI was available (see `pki_note`)."""
    pki_note: str | None = None


def provision(
    fleet: FleetConfig | Sequence[CarSpec],
    state_dir: str | os.PathLike[str] | StateDir,
    *,
    clock: Clock,
    pki: bool = True,
    pki_clock: Clock | None = None,
) -> ProvisionResult:
    """Write (or complete) the state directory for a fleet file or a list of cars.

    `clock` dates the run: registration ages count back from its day, and the manifest records the time.
    With `pki`, mTLS certificates are issued too (see `issue_certificates`), dated by `pki_clock` (None: real
    time, which a real broker checks them against).
    Raises StateDirError when the directory belongs to another fleet or holds unreadable files.
    """
    state = state_dir if isinstance(state_dir, StateDir) else StateDir(state_dir)
    today = datetime.fromtimestamp(clock.now(), UTC).date()
    if isinstance(fleet, FleetConfig):
        cars = expand_fleet(fleet, today=today)
        name, seed, prefix = fleet.name, fleet.seed, fleet.topic_prefix
    else:
        cars = list(fleet)
        name, seed, prefix = None, None, ""
    _make_dir(state.root)
    with _locked(state.root / ".provision.lock"):
        previous = state.load_manifest() if state.manifest_path.exists() else None
        if previous is not None and name is not None and previous.fleet not in (None, name):
            raise StateDirError(
                f"{state.root}: holds fleet {previous.fleet!r}, not {name!r}; use another --state directory"
            )
        known_jwks = _read_jwks(state.fleet_jwks_path)
        _make_dir(state.cars_dir)
        public: dict[str, dict[str, str]] = {}
        added: list[str] = []
        for car in cars:
            key_path = state.car_key_path(car.vin)
            if key_path.exists():
                public[car.vin] = _load_key(key_path, car.vin).public_jwk()
            else:
                key = SigningKey.generate(car.vin)
                _make_dir(key_path.parent)
                _write(key_path, key.private_pem(), private=True)
                public[car.vin] = key.public_jwk()
                added.append(car.vin)
        cloud_key_created = not state.cloud_key_path.exists()
        if cloud_key_created:
            _make_dir(state.cloud_dir)
            _write(state.cloud_key_path, SigningKey.generate(CLOUD_KID).private_pem(), private=True)
        cloud_key = _load_key(state.cloud_key_path, CLOUD_KID)
        _write_json(state.cloud_jwks_path, {"keys": [cloud_key.public_jwk()]})

        vehicles = _merge(previous, cars)
        for vehicle in vehicles:
            if vehicle.vin not in public:  # provisioned by an earlier run with other cars
                jwk = known_jwks.get(vehicle.vin)
                public[vehicle.vin] = (
                    jwk if jwk is not None else _load_key(state.car_key_path(vehicle.vin), vehicle.vin).public_jwk()
                )
        certificates, note = (None, None)
        if pki:
            certificates, note = issue_certificates(state, [v.vin for v in vehicles], clock=pki_clock)
        _write_json(state.fleet_jwks_path, {"keys": [public[v.vin] for v in vehicles]})
        manifest = Manifest(
            fleet=name if name is not None else previous.fleet if previous else None,
            seed=seed if seed is not None else previous.seed if previous else None,
            topic_prefix=prefix if name is not None else previous.topic_prefix if previous else "",
            provisioned_at=clock.now(),
            vehicles=tuple(vehicles),
        )
        _write(state.manifest_path, (manifest.model_dump_json(indent=2) + "\n").encode())
    return ProvisionResult(
        state=state,
        vehicles=len(vehicles),
        added=tuple(added),
        kept=len(cars) - len(added),
        cloud_key_created=cloud_key_created,
        certificates=certificates,
        pki_note=note,
    )


def issue_certificates(
    state: StateDir, vins: Sequence[str], *, clock: Clock | None = None
) -> tuple[int | None, str | None]:
    """Make sure `<state>/pki` holds the fleet CA and the broker, cloud, operator and per-car certificates.

    Idempotent (`FleetPKI.ensure_*`): what is on disk is kept. Returns (certificates issued in this call, None:
    no note, the PKI is always at hand). `clock` dates the certificates: None means real time,
    which is what a real broker checks them against.
    """
    pki = FleetPKI(state.pki_dir, clock)
    names = [SERVER, CLOUD, OPERATOR, *vins]
    try:
        had_ca = pki.has_ca()
        existing = sum(1 for name in names if pki.paths(name).cert.exists()) if had_ca else 0
        pki.ensure_ca()
        pki.ensure_server()
        pki.ensure_cloud()
        pki.ensure_operator()
        pki.ensure_cars(vins)
    except PKIError as exc:
        raise StateDirError(f"{state.pki_dir}: {exc}") from None
    return len(names) - existing + (0 if had_ca else 1), None


def _merge(previous: Manifest | None, cars: Sequence[CarSpec]) -> list[ManifestVehicle]:
    """Earlier entries first (registration day kept, the rest refreshed from this run), then new cars."""
    current = {car.vin: car for car in cars}
    merged: list[ManifestVehicle] = []
    seen: set[str] = set()
    for old in previous.vehicles if previous else ():
        car = current.get(old.vin)
        merged.append(
            old
            if car is None
            else ManifestVehicle(
                vin=car.vin,
                model=car.model,
                equipment=car.equipment,
                registered_at=old.registered_at,
                group=car.group,
            )
        )
        seen.add(old.vin)
    for car in cars:
        if car.vin not in seen:
            seen.add(car.vin)
            merged.append(
                ManifestVehicle(
                    vin=car.vin,
                    model=car.model,
                    equipment=car.equipment,
                    registered_at=car.registered_at,
                    group=car.group,
                )
            )
    return merged


def _load_key(path: Path, kid: str) -> SigningKey:
    try:
        return SigningKey.from_private_pem(path.read_bytes(), kid)
    except FileNotFoundError:
        raise StateDirError(f"{path}: missing key of {kid}") from None
    except (OSError, ValueError, ProtocolError) as exc:
        raise StateDirError(f"{path}: unreadable private key of {kid}: {type(exc).__name__}") from None


def _read_jwks(path: Path) -> dict[str, dict[str, str]]:
    """kid → JWK of an existing JWKS file ({} when absent or unreadable: it is rebuilt from the key files)."""
    try:
        keys = KeySet.from_jwks(path.read_bytes())
    except (OSError, ProtocolError):
        return {}
    # Re-exported, so a JWKS written before RFC 9864 (`alg` EdDSA) is rewritten with `alg` Ed25519: same keys.
    return {key.kid: key.to_jwk() for key in keys}


def _make_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)


def _write_json(path: Path, data: Any) -> None:
    _write(path, (json.dumps(data, indent=2) + "\n").encode())


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    """Write atomically (temporary file, then rename); a private file is 0600 from its creation."""
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # left over by a run that was killed mid-write
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` so that two provisioning runs never interleave in one directory."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
