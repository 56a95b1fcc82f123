"""Cars as the cloud knows them: factory data from the provisioning manifest (with the free licence year each
car starts with, R14), and what the car last reported (status, privacy, connection).

The manifest is the fleet's `<state>/vehicles.json` as `tcu-sim fleet provision` writes it (`{version, fleet,
seed, topic_prefix, provisioned_at, vehicles: [{vin, model, equipment, registered_at, group}]}`, `registered_at`
a calendar day) — or a bare list of such vehicles. A registration day becomes midnight UTC of that day: the free
licence year (R14) starts then. `read_manifest` gives the records and the fleet's topic prefix, so that the CLI and
the stack import the same records.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

from broker.registry import LicenceRecord, VehicleRecord
from tcu_sim.protocol import (
    Capabilities,
    Equipment,
    ProtocolError,
    StatusSnapshot,
    VehicleModel,
    capabilities,
    validate_vin,
)

from ._access import AccessControl
from ._context import ServiceContext
from ._rights import Right
from ._security import add_years

__all__ = [
    "ManifestError",
    "VehicleManifest",
    "VehicleService",
    "load_manifest",
    "parse_manifest",
    "read_manifest",
    "vehicle_capabilities",
]


class ManifestError(ValueError):
    """The provisioning manifest is not valid; the message names the file, the entry and the problem."""


def vehicle_capabilities(vehicle: VehicleRecord) -> Capabilities:
    """What the car's model and equipment can do (the catalogue of `tcu_sim.protocol`)."""
    return capabilities(VehicleModel(vehicle.model), Equipment(vehicle.equipment))


@dataclass(frozen=True, slots=True)
class VehicleManifest:
    """What the cloud takes from a manifest: the cars' records and the fleet's topic prefix."""

    vehicles: list[VehicleRecord]
    topic_prefix: str = ""


def _midnight_utc(day: date) -> float:
    return datetime.combine(day, time(0, 0), tzinfo=UTC).timestamp()


def _timestamp(value: object) -> float:
    """`registered_at` as seconds since the epoch: a number, an ISO 8601 day (midnight UTC) or time with a zone."""
    if isinstance(value, bool):
        raise ValueError("registered_at must be a day or a time")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("registered_at needs a time zone")
        return value.timestamp()
    if isinstance(value, date):
        return _midnight_utc(value)
    if isinstance(value, str):
        text = value.strip()
        if len(text) == 10:  # YYYY-MM-DD: the registration day, as the fleet writes it
            return _midnight_utc(date.fromisoformat(text))
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            raise ValueError("registered_at needs a time zone")
        return parsed.timestamp()
    raise ValueError("registered_at must be a day (YYYY-MM-DD), an ISO 8601 time or seconds since the epoch")


def parse_manifest(data: Any, *, source: str = "vehicles.json") -> list[VehicleRecord]:
    """Vehicle records from a manifest: a list of `{vin, model, equipment, registered_at, group?}` (or an object
    with such a list under `vehicles`). Extra fields are ignored; wrong ones raise `ManifestError`."""
    entries = data.get("vehicles") if isinstance(data, Mapping) else data
    if not isinstance(entries, list):
        raise ManifestError(f"{source}: expected a list of vehicles")
    out: list[VehicleRecord] = []
    for i, entry in enumerate(entries):
        where = f"{source}: vehicles[{i}]"
        if not isinstance(entry, Mapping):
            raise ManifestError(f"{where}: expected an object")
        try:
            vin = validate_vin(str(entry["vin"]))
            model = VehicleModel(entry["model"])
            equipment = Equipment(entry["equipment"])
            capabilities(model, equipment)  # refuses a combination that is not built
            registered_at = _timestamp(entry["registered_at"])
        except KeyError as exc:
            raise ManifestError(f"{where}: missing {exc.args[0]!r}") from None
        except (ValueError, ProtocolError) as exc:
            raise ManifestError(f"{where}: {exc}") from None
        group = entry.get("group")
        out.append(
            VehicleRecord(
                vin=vin, model=model.value, equipment=equipment.value, registered_at=registered_at,
                group=None if group is None else str(group),
            )
        )
    return out


def read_manifest(path: str | Path) -> VehicleManifest:
    """Read `<state>/vehicles.json`: the vehicle records (see `parse_manifest`) and the fleet's topic prefix."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{p}: {exc}") from None
    prefix = data.get("topic_prefix", "") if isinstance(data, Mapping) else ""
    if not isinstance(prefix, str):
        raise ManifestError(f"{p}: topic_prefix: expected a string")
    return VehicleManifest(parse_manifest(data, source=str(p)), prefix)


def load_manifest(path: str | Path) -> list[VehicleRecord]:
    """The vehicle records of `<state>/vehicles.json` (see `read_manifest`)."""
    return read_manifest(path).vehicles


class VehicleService:
    """Factory data, licences' free first year, and the car's reported state."""

    def __init__(self, ctx: ServiceContext, access: AccessControl) -> None:
        self._ctx = ctx
        self._reg = ctx.registry
        self._access = access

    def __repr__(self) -> str:
        return f"VehicleService({self._reg!r})"

    async def import_vehicles(self, vehicles: Iterable[VehicleRecord]) -> int:
        """Store factory data and give each car its free licence year from its registration day (R14),
        unless it has a licence already (importing again changes no licence); how many cars."""
        records = list(vehicles)
        await self._reg.upsert_vehicles(records)
        years = self._ctx.config.free_years
        for v in records:
            await self._reg.ensure_licence(
                LicenceRecord(vin=v.vin, starts_at=v.registered_at, ends_at=add_years(v.registered_at, years))
            )
        return len(records)

    async def record_status(self, vin: str, status: StatusSnapshot) -> bool:
        """Keep a verified status snapshot of the car; False when an older one than the stored arrives late."""
        body = status.model_dump(mode="json")
        return await self._reg.record_status(vin, body, status.privacy_mode.value, status.updated_at)

    async def record_privacy(self, vin: str, privacy_mode: str, at: float) -> bool:
        """Keep a privacy change the car announced in an event (in maximum privacy it sends no status)."""
        return await self._reg.record_privacy(vin, privacy_mode, at)

    async def set_online(self, vin: str, online: bool) -> None:
        """Keep the car's connection state (`tcu/{vin}/connection`)."""
        await self._reg.set_vehicle_online(vin, online)

    async def vehicle_status(self, token: str | None, vin: str) -> dict[str, Any] | None:
        """The car's last status for one of the user's cars (session, garage, rights, licence, privacy);
        None when the car has not reported one yet."""
        access = await self._access.service(token, vin, Right.VEHICLE_STATUS)
        state = await self._reg.get_vehicle_state(access.vin)
        return None if state is None else state.status
