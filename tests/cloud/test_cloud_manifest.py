"""`broker.cloud.read_manifest` / `load_manifest` take the fleet's own `vehicles.json` (as `tcu-sim fleet provision`
writes it: registration days, topic prefix), so that the CLI and the stack import the same records."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from cloud_testkit import ATECA_RADIO, LEON

from broker.cloud import ManifestError, load_manifest, parse_manifest, read_manifest
from broker.registry import VehicleRecord
from tcu_sim.fleet import Manifest, ManifestVehicle
from tcu_sim.vehicle import Equipment, VehicleModel


def _fleet_manifest(tmp_path: Path) -> Path:
    manifest = Manifest(
        fleet="demo", seed=7, topic_prefix="site-a", provisioned_at=1_767_225_600.0,
        vehicles=(
            ManifestVehicle(vin=LEON, model=VehicleModel.LEON, equipment=Equipment.MEDIA_SYSTEM,
                            registered_at=date(2025, 3, 14), group="city"),
            ManifestVehicle(vin=ATECA_RADIO, model=VehicleModel.ATECA, equipment=Equipment.RADIO,
                            registered_at=date(2024, 12, 31), group="rural"),
        ),
    )
    path = tmp_path / "vehicles.json"
    path.write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
    return path


def test_the_fleets_manifest_gives_records_from_midnight_utc_of_the_registration_day(tmp_path: Path) -> None:
    path = _fleet_manifest(tmp_path)
    manifest = read_manifest(path)
    assert manifest.topic_prefix == "site-a"
    assert manifest.vehicles == [
        VehicleRecord(LEON, "leon", "media_system", datetime(2025, 3, 14, tzinfo=UTC).timestamp(), "city"),
        VehicleRecord(ATECA_RADIO, "ateca", "radio", datetime(2024, 12, 31, tzinfo=UTC).timestamp(), "rural"),
    ]
    assert load_manifest(path) == manifest.vehicles


def test_times_with_a_zone_and_epoch_seconds_still_work_a_naive_time_does_not() -> None:
    entry = {"vin": LEON, "model": "leon", "equipment": "media_system"}
    at = [
        parse_manifest([{**entry, "registered_at": value}])[0].registered_at
        for value in ("2025-03-14T12:00:00Z", "2025-03-14T14:00:00+02:00", 1_741_953_600)
    ]
    assert at == [1_741_953_600.0] * 3
    with pytest.raises(ManifestError, match=r"vehicles\[0\]: registered_at needs a time zone"):
        parse_manifest([{**entry, "registered_at": "2025-03-14T12:00:00"}])


def test_a_bad_entry_names_the_file_the_entry_and_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "vehicles.json"
    path.write_text(json.dumps({"topic_prefix": "", "vehicles": [
        {"vin": LEON, "model": "leon", "equipment": "media_system", "registered_at": "2025-02-30"},
    ]}), encoding="utf-8")
    with pytest.raises(ManifestError, match=rf"{path}: vehicles\[0\]: .*day"):
        read_manifest(path)
    path.write_text(json.dumps({"topic_prefix": 3, "vehicles": []}), encoding="utf-8")
    with pytest.raises(ManifestError, match=rf"{path}: topic_prefix"):
        read_manifest(path)
