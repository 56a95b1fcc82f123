"""Provisioning: the state directory layout, idempotence, and the loaders the TCU and the cloud use."""

from __future__ import annotations

import json
import stat
from datetime import date
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from broker.pki import FleetPKI
from tcu_sim.clock import VirtualClock
from tcu_sim.fleet import (
    CLOUD_KID,
    FleetConfig,
    StateDir,
    StateDirError,
    expand_fleet,
    parse_fleet,
    provision,
)
from tcu_sim.protocol import CLOUD, MessageType, Signer, Verifier

FLEET = """\
name: prov
seed: 5
defaults:
  home_area: {{center: {{lat: 41.39, lon: 2.17}}, radius_km: 3}}
groups:
  - {{name: leon, count: {leon}, model: leon, equipment: media_system}}
  - {{name: ateca, count: 4, model: ateca, equipment: radio, registered_age_days: {{min: 100, max: 100}}}}
"""


def fleet(leon: int = 6, name: str = "prov") -> FleetConfig:
    return parse_fleet(FLEET.format(leon=leon).replace("name: prov", f"name: {name}"))


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(start=1_767_225_600.0)  # 2026-01-01


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_layout_of_a_fresh_state_dir(tmp_path: Path, clock: VirtualClock) -> None:
    config = fleet()
    result = provision(config, tmp_path / "state", clock=clock, pki=False)
    state = StateDir(tmp_path / "state")
    cars = expand_fleet(config)
    assert result.vehicles == 10
    assert set(result.added) == {c.vin for c in cars}
    assert result.kept == 0
    assert result.cloud_key_created
    assert state.is_provisioned()
    for car in cars:
        assert mode(state.car_key_path(car.vin)) == 0o600
        assert not state.seq_path(car.vin).exists()  # the TCU owns it
    assert mode(state.cloud_key_path) == 0o600
    assert not list(state.root.rglob("*.tmp"))
    manifest = json.loads(state.manifest_path.read_text())
    assert manifest["fleet"] == "prov"
    assert manifest["vehicles"][0] == {
        "vin": cars[0].vin,
        "model": "leon",
        "equipment": "media_system",
        "registered_at": cars[0].registered_at.isoformat(),
        "group": "leon",
    }
    assert [v["vin"] for v in manifest["vehicles"]] == [c.vin for c in cars]


def test_keys_load_back_and_every_car_is_in_the_fleet_jwks(tmp_path: Path, clock: VirtualClock) -> None:
    config = fleet()
    provision(config, tmp_path, clock=clock, pki=False)
    state = StateDir(tmp_path)
    fleet_keys = state.load_fleet_keys()
    cars = expand_fleet(config)
    assert sorted(fleet_keys.kids()) == sorted(c.vin for c in cars)
    # a car's key signs what the cloud verifies with the fleet JWKS, and the other way round
    car_key = state.load_car_key(cars[3].vin)
    token = Signer(car_key, cars[3].vin, clock).sign(MessageType.STATUS, aud=CLOUD, seq=1, body={"x": 1})
    verified = Verifier(fleet_keys, audience=CLOUD, clock=clock).verify(token, typ=MessageType.STATUS)
    assert verified.kid == cars[3].vin
    cloud_key = state.load_cloud_signing_key()
    assert cloud_key.kid == CLOUD_KID
    assert state.load_cloud_keys().kids() == [CLOUD_KID]
    command = Signer(cloud_key, CLOUD, clock).sign(MessageType.COMMAND, aud=cars[3].vin, seq=1, body={})
    Verifier(state.load_cloud_keys(), audience=cars[3].vin, clock=clock).verify(command, typ=MessageType.COMMAND)
    assert state.load_manifest().vins() == [c.vin for c in cars]


def test_provisioning_is_idempotent(tmp_path: Path, clock: VirtualClock) -> None:
    config = fleet()
    provision(config, tmp_path, clock=clock, pki=False)
    state = StateDir(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*.pem")}
    jwks_before = state.fleet_jwks_path.read_bytes()
    manifest_before = state.load_manifest()

    result = provision(config, tmp_path, clock=clock, pki=False)
    assert result.added == ()
    assert result.kept == 10
    assert not result.cloud_key_created
    assert {p: p.read_bytes() for p in tmp_path.rglob("*.pem")} == before
    assert state.fleet_jwks_path.read_bytes() == jwks_before
    assert state.load_manifest().vehicles == manifest_before.vehicles


async def test_new_cars_are_added_and_registration_days_kept(tmp_path: Path, clock: VirtualClock) -> None:
    provision(fleet(leon=6), tmp_path, clock=clock, pki=False)
    state = StateDir(tmp_path)
    first = state.load_manifest()
    old_keys = {vin: state.car_key_path(vin).read_bytes() for vin in first.vins()}
    await clock.advance(30 * 86_400)  # a month later the fleet grows
    result = provision(fleet(leon=9), tmp_path, clock=clock, pki=False)
    assert len(result.added) == 3
    assert result.kept == 10
    second = state.load_manifest()
    assert second.vins()[:10] == first.vins()
    assert second.vehicles[:10] == first.vehicles  # registration days fixed at first provisioning
    new = [v for v in second.vehicles if v.vin in result.added]
    assert [v.group for v in new] == ["leon"] * 3
    assert {vin: state.car_key_path(vin).read_bytes() for vin in first.vins()} == old_keys
    assert len(state.load_fleet_keys()) == 13


def test_a_subset_of_cars_keeps_the_others(tmp_path: Path, clock: VirtualClock) -> None:
    cars = expand_fleet(fleet())
    provision(cars[:4], tmp_path, clock=clock, pki=False)
    provision(cars[4:], tmp_path, clock=clock, pki=False)
    state = StateDir(tmp_path)
    assert state.load_manifest().vins() == [c.vin for c in cars]
    assert sorted(state.load_fleet_keys().kids()) == sorted(c.vin for c in cars)


def test_registration_counts_back_from_the_clock(tmp_path: Path) -> None:
    clock = VirtualClock(start=1_780_272_000.0)  # 2026-06-01
    provision(fleet(), tmp_path, clock=clock, pki=False)
    ateca = [v for v in StateDir(tmp_path).load_manifest().vehicles if v.group == "ateca"]
    assert {v.registered_at for v in ateca} == {date(2026, 2, 21)}  # 100 days before


def test_another_fleet_is_refused(tmp_path: Path, clock: VirtualClock) -> None:
    provision(fleet(), tmp_path, clock=clock, pki=False)
    with pytest.raises(StateDirError, match="holds fleet 'prov', not 'other'"):
        provision(fleet(name="other"), tmp_path, clock=clock, pki=False)


def test_a_lost_fleet_jwks_is_rebuilt_from_the_keys(tmp_path: Path, clock: VirtualClock) -> None:
    cars = expand_fleet(fleet())
    provision(cars[:5], tmp_path, clock=clock, pki=False)
    state = StateDir(tmp_path)
    state.fleet_jwks_path.unlink()
    provision(cars[5:], tmp_path, clock=clock, pki=False)
    assert sorted(state.load_fleet_keys().kids()) == sorted(c.vin for c in cars)


def test_a_legacy_eddsa_state_dir_loads_and_is_rewritten_with_ed25519(tmp_path: Path, clock: VirtualClock) -> None:
    # State provisioned before RFC 9864 published its keys with `alg` EdDSA: the same keys, another name.
    cars = expand_fleet(fleet())
    provision(cars[:5], tmp_path, clock=clock, pki=False)
    state = StateDir(tmp_path)
    for path in (state.fleet_jwks_path, state.cloud_jwks_path):
        jwks = json.loads(path.read_text())
        assert {key["alg"] for key in jwks["keys"]} == {"Ed25519"}
        path.write_text(json.dumps({"keys": [{**key, "alg": "EdDSA"} for key in jwks["keys"]]}))
    legacy = state.load_fleet_keys()
    assert len(legacy) == 5
    assert len(state.load_cloud_keys()) == 1

    provision(cars[5:], tmp_path, clock=clock, pki=False)
    for path in (state.fleet_jwks_path, state.cloud_jwks_path):
        assert {key["alg"] for key in json.loads(path.read_text())["keys"]} == {"Ed25519"}
    assert all(state.load_fleet_keys().get(key.kid) == key for key in legacy)


def test_loaders_explain_what_is_missing(tmp_path: Path) -> None:
    state = StateDir(tmp_path)
    with pytest.raises(StateDirError, match=r"missing vehicle manifest; provision first \(tcu-sim fleet provision"):
        state.load_manifest()
    with pytest.raises(StateDirError, match="missing key of car"):
        state.load_car_key("VSSZZZKLZRR000001")
    with pytest.raises(StateDirError, match="missing fleet JWKS"):
        state.load_fleet_keys()
    with pytest.raises(StateDirError, match="VIN"):
        state.car_dir("../../etc")


def test_corrupt_files_are_state_dir_errors(tmp_path: Path, clock: VirtualClock) -> None:
    provision(fleet(), tmp_path, clock=clock, pki=False)
    state = StateDir(tmp_path)
    vin = state.load_manifest().vins()[0]
    state.car_key_path(vin).write_bytes(b"not a key")
    state.cloud_jwks_path.write_text("{")
    state.manifest_path.write_text('{"version": 2}')
    with pytest.raises(StateDirError, match="unreadable key of car"):
        state.load_car_key(vin)
    with pytest.raises(StateDirError, match="not a valid JWKS"):
        state.load_cloud_keys()
    with pytest.raises(StateDirError, match=r"vehicles\.json: version"):
        state.load_manifest()
    assert "not a key" not in repr(state)


def test_private_key_never_in_repr(tmp_path: Path, clock: VirtualClock) -> None:
    provision(fleet(), tmp_path, clock=clock, pki=False)
    state = StateDir(tmp_path)
    key = state.load_cloud_signing_key()
    assert "PRIVATE" not in repr(key)
    assert repr(state) == f"StateDir({str(tmp_path)!r})"


def test_certificates_for_every_car_cloud_and_operator(tmp_path: Path, clock: VirtualClock) -> None:
    config = fleet()
    result = provision(config, tmp_path, clock=clock)
    state = StateDir(tmp_path)
    pki = FleetPKI(state.pki_dir)
    vins = [c.vin for c in expand_fleet(config)]
    assert result.certificates == 1 + 3 + len(vins)  # CA, server, cloud, operator, one per car
    assert result.pki_note is None
    assert pki.has_ca()
    for name in [*vins, "cloud", "operator"]:
        paths = pki.paths(name)
        cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == name
        assert mode(paths.key) == 0o600
    again = provision(config, tmp_path, clock=clock)
    assert again.certificates == 0


def test_no_pki_leaves_no_pki_dir(tmp_path: Path, clock: VirtualClock) -> None:
    result = provision(fleet(), tmp_path, clock=clock, pki=False)
    assert result.certificates is None
    assert not StateDir(tmp_path).pki_dir.exists()
