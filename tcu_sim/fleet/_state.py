"""The provisioned state directory: where cars, cloud and `tcu-sim up` find keys and the vehicle manifest.

    <state>/fleet.jwks.json          every car's public key (kid = VIN)
    <state>/cloud.jwks.json          the cloud's public key (kid "cloud-1"), pinned by every car
    <state>/cloud/cloud.key.pem      the cloud's private signing key (0600)
    <state>/cars/<VIN>/car.key.pem   a car's private signing key (0600)
    <state>/cars/<VIN>/seq.json      the car's persisted seq counters (the TCU writes it, not provisioning)
    <state>/vehicles.json            the manifest: the cars (vin, model, equipment, registered_at, group)
    <state>/pki/                     mTLS certificates (broker.pki)

`StateDir` only names paths and loads; `provision()` writes.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tcu_sim.fleet._errors import StateDirError
from tcu_sim.protocol import KeySet, ProtocolError, SigningKey, validate_vin
from tcu_sim.vehicle import Equipment, VehicleModel

__all__ = ["CLOUD_KID", "Manifest", "ManifestVehicle", "StateDir"]

CLOUD_KID = "cloud-1"


class ManifestVehicle(BaseModel):
    """One car in `vehicles.json`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    vin: str
    model: VehicleModel
    equipment: Equipment
    registered_at: date
    group: str


class Manifest(BaseModel):
    """`vehicles.json`: the cars provisioned in a state directory, in fleet order (later additions last)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = 1
    fleet: str | None = None
    """Name of the fleet file's fleet (None when provisioned from bare car specs)."""
    seed: int | None = None
    topic_prefix: str = ""
    provisioned_at: float = Field(description="Clock time (Unix seconds) of the last provisioning run.")
    vehicles: tuple[ManifestVehicle, ...] = ()

    def vins(self) -> list[str]:
        """Every VIN, in manifest order."""
        return [vehicle.vin for vehicle in self.vehicles]

    def vehicle(self, vin: str) -> ManifestVehicle | None:
        """The entry for `vin`, if provisioned."""
        return next((vehicle for vehicle in self.vehicles if vehicle.vin == vin), None)


class StateDir:
    """Paths and loaders of a provisioned state directory (see the module docstring for the layout)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"StateDir({str(self.root)!r})"

    @property
    def fleet_jwks_path(self) -> Path:
        """All car public keys (JWKS, kid = VIN)."""
        return self.root / "fleet.jwks.json"

    @property
    def cloud_jwks_path(self) -> Path:
        """The cloud public key (JWKS, kid `cloud-1`)."""
        return self.root / "cloud.jwks.json"

    @property
    def cloud_dir(self) -> Path:
        """The cloud's private files."""
        return self.root / "cloud"

    @property
    def cloud_key_path(self) -> Path:
        """The cloud's private signing key (PEM)."""
        return self.cloud_dir / "cloud.key.pem"

    @property
    def cars_dir(self) -> Path:
        """One sub-directory per VIN."""
        return self.root / "cars"

    @property
    def manifest_path(self) -> Path:
        """`vehicles.json`."""
        return self.root / "vehicles.json"

    @property
    def pki_dir(self) -> Path:
        """mTLS certificates and keys, managed by `broker.pki.FleetPKI`."""
        return self.root / "pki"

    def car_dir(self, vin: str) -> Path:
        """The car's own directory. The VIN is checked first, so that no input can point outside `cars/`."""
        try:
            validate_vin(vin)
        except ProtocolError as exc:
            raise StateDirError(f"{self.root}: {exc.detail}") from None
        return self.cars_dir / vin

    def car_key_path(self, vin: str) -> Path:
        """The car's private signing key (PEM, 0600)."""
        return self.car_dir(vin) / "car.key.pem"

    def seq_path(self, vin: str) -> Path:
        """Where the car's TCU persists its seq counters."""
        return self.car_dir(vin) / "seq.json"

    def is_provisioned(self) -> bool:
        """Whether a provisioning run has completed here (the manifest is written last)."""
        return self.manifest_path.is_file()

    def load_car_key(self, vin: str) -> SigningKey:
        """The car's private signing key (kid = VIN)."""
        return self._load_private(self.car_key_path(vin), vin, f"key of car {vin}")

    def load_cloud_signing_key(self) -> SigningKey:
        """The cloud's private signing key (kid `cloud-1`)."""
        return self._load_private(self.cloud_key_path, CLOUD_KID, "cloud signing key")

    def load_fleet_keys(self) -> KeySet:
        """Every provisioned car's public key."""
        return self._load_keys(self.fleet_jwks_path, "fleet JWKS")

    def load_cloud_keys(self) -> KeySet:
        """The cloud's public key(s), as pinned by the cars."""
        return self._load_keys(self.cloud_jwks_path, "cloud JWKS")

    def load_manifest(self) -> Manifest:
        """`vehicles.json`."""
        data = self._read(self.manifest_path, "vehicle manifest")
        try:
            return Manifest.model_validate_json(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise StateDirError(f"{self.manifest_path}: {where}: {first['msg']}") from None

    def _load_private(self, path: Path, kid: str, what: str) -> SigningKey:
        data = self._read(path, what)
        try:
            return SigningKey.from_private_pem(data, kid)
        except ProtocolError as exc:
            raise StateDirError(f"{path}: unreadable {what}: {exc.detail}") from None

    def _load_keys(self, path: Path, what: str) -> KeySet:
        data = self._read(path, what)
        try:
            return KeySet.from_jwks(data)
        except ProtocolError as exc:
            raise StateDirError(f"{path}: not a valid JWKS: {exc.detail}") from None

    def _read(self, path: Path, what: str) -> bytes:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise StateDirError(
                f"{path}: missing {what}; provision first (tcu-sim fleet provision FLEET.yaml --state {self.root})"
            ) from None
        except OSError as exc:
            raise StateDirError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
