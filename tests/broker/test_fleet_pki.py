"""broker.pki: CA, CN = VIN, chain, revocation and CRL, expiry, idempotence, file modes, no key material in reprs."""

from __future__ import annotations

import contextlib
import random
import ssl
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from broker.pki import (
    CLOUD,
    OPERATOR,
    FleetPKI,
    IdentityKind,
    InvalidIdentityName,
    PKIStateError,
    UnknownIdentity,
    cloud_identity,
    identity_kind,
    operator_identity,
)
from tcu_sim.clock import VirtualClock
from tcu_sim.protocol import generate_vin

VIN = generate_vin(random.Random(5))
OTHER_VIN = generate_vin(random.Random(6))


@pytest.fixture
def pki(tmp_path: Path) -> FleetPKI:
    return FleetPKI(tmp_path / "pki")


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> ssl.SSLObject:
    """An in-memory TLS handshake; returns the server side (raises ssl.SSLError when either side refuses)."""
    server_in, server_out, client_in, client_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    server_side = server.wrap_bio(server_in, server_out, server_side=True)
    client_side = client.wrap_bio(client_in, client_out, server_hostname="localhost")
    for _ in range(10):
        for side in (client_side, server_side):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        server_in.write(client_out.read())
        client_in.write(server_out.read())
    return server_side


def _cn(cert: x509.Certificate) -> str:
    (attribute,) = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert isinstance(attribute.value, str)
    return attribute.value


def test_car_certificate_has_the_vin_as_cn_and_chains_to_the_ca(pki: FleetPKI) -> None:
    info = pki.ensure_car(VIN)
    cert = pki.load_certificate(VIN)
    ca = pki.ca_certificate()

    assert info.kind is IdentityKind.CAR
    assert _cn(cert) == VIN
    assert cert.issuer == ca.subject
    cert.verify_directly_issued_by(ca)  # raises when the signature or issuer does not match
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert info.serial == cert.serial_number
    assert info.paths.cert == pki.directory / "cars" / f"{VIN}.crt"


def test_chain_verifies_with_openssl_as_a_tls_server_would(pki: FleetPKI) -> None:
    pki.ensure_car(VIN)
    # The server side requires a client certificate and checks the CRL, like the broker.
    server_side = _handshake(pki.server_ssl_context(), pki.client_ssl_context(VIN))
    peer = server_side.getpeercert()
    assert peer is not None
    assert (("commonName", VIN),) in peer["subject"]


def test_server_certificate_names_loopback(pki: FleetPKI) -> None:
    pki.ensure_server()
    cert = pki.load_certificate("server")
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_service_identities(pki: FleetPKI) -> None:
    assert _cn(x509.load_pem_x509_certificate(pki.ensure_cloud().paths.cert.read_bytes())) == CLOUD
    assert _cn(x509.load_pem_x509_certificate(pki.ensure_operator().paths.cert.read_bytes())) == OPERATOR
    tester = pki.ensure_identity("test-app")
    assert tester.kind is IdentityKind.NAMED
    assert tester.paths.cert == pki.directory / "identities" / "test-app.crt"


@pytest.mark.parametrize(
    "name",
    ["+", "#", "a/b", "", "Cloud", "cloud ", "VSSZZZ5FZLR00000", "VSSZZZ5FZLR0000OO", "x" * 64, "$share", "ä"],
)
def test_unsafe_names_are_refused(pki: FleetPKI, name: str) -> None:
    with pytest.raises(InvalidIdentityName):
        pki.issue(name)


def test_identity_kinds() -> None:
    assert identity_kind(VIN) is IdentityKind.CAR
    assert identity_kind("cloud") is IdentityKind.CLOUD
    assert identity_kind("operator") is IdentityKind.OPERATOR
    assert identity_kind("server") is IdentityKind.SERVER
    assert identity_kind("monitor-1") is IdentityKind.NAMED


def test_ensure_is_idempotent_and_issue_is_not(tmp_path: Path) -> None:
    first = FleetPKI(tmp_path)
    car = first.ensure_car(VIN)
    ca_before = first.ca_cert_path.read_bytes()

    second = FleetPKI(tmp_path)  # a new process: loads the CA from disk
    assert second.ensure_car(VIN) == car
    assert second.ca_cert_path.read_bytes() == ca_before
    reissued = second.issue_car(VIN)
    assert reissued.serial != car.serial
    assert second.ensure_car(VIN) == reissued


def test_certificates_of_an_earlier_ca_are_replaced(tmp_path: Path) -> None:
    old = FleetPKI(tmp_path)
    car = old.ensure_car(VIN)
    old.ca_cert_path.unlink()
    old.ca_key_path.unlink()

    new = FleetPKI(tmp_path)
    replaced = new.ensure_car(VIN)
    assert replaced.serial != car.serial
    new.load_certificate(VIN).verify_directly_issued_by(new.ca_certificate())


def test_private_keys_are_0600_and_never_in_reprs(pki: FleetPKI) -> None:
    car = pki.ensure_car(VIN)
    pki.ensure_server()
    for key in (pki.ca_key_path, car.paths.key, pki.server_paths.key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    for text in (repr(pki), repr(car), repr(pki._require_ca())):  # the loaded CA object too
        assert "PRIVATE KEY" not in text
        assert car.paths.key.read_text() not in text
    assert stat.S_IMODE(car.paths.cert.stat().st_mode) == 0o644


def test_revocation_by_name_and_serial_lands_in_the_crl(pki: FleetPKI) -> None:
    pki.ensure_ca()
    empty = x509.load_pem_x509_crl(pki.crl_path.read_bytes())
    assert len(empty) == 0  # the CRL exists before anything is revoked

    car = pki.ensure_car(VIN)
    other = pki.ensure_car(OTHER_VIN)
    assert pki.revoke(VIN) == car.serial
    assert pki.revoke(other.serial) == other.serial
    assert pki.revoke(VIN) == car.serial  # twice is harmless

    crl = x509.load_pem_x509_crl(pki.crl_path.read_bytes())
    assert crl.is_signature_valid(pki.ca_certificate().public_key())  # type: ignore[arg-type]  # EC key
    assert {entry.serial_number for entry in crl} == {car.serial, other.serial}
    assert crl.get_revoked_certificate_by_serial_number(car.serial) is not None
    empty_number = empty.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number > empty_number
    assert pki.revoked_serials() == {car.serial, other.serial}
    assert FleetPKI(pki.directory).is_revoked(car.serial)  # persisted


def test_revoked_certificate_fails_a_crl_checking_handshake(pki: FleetPKI) -> None:
    pki.ensure_car(VIN)
    pki.revoke(VIN)
    server = pki.server_ssl_context()  # reads the CRL now
    client = pki.client_ssl_context(VIN)
    with pytest.raises(ssl.SSLError, match="revoked"):
        _handshake(server, client)


def test_revoking_an_unknown_name_says_so(pki: FleetPKI) -> None:
    with pytest.raises(UnknownIdentity):
        pki.revoke(VIN)


def test_validity_is_configurable_and_can_lie_in_the_past(pki: FleetPKI) -> None:
    now = datetime.now(UTC)
    info = pki.issue_car(VIN, not_before=now - timedelta(days=3), not_after=now - timedelta(days=1))
    assert info.not_valid_after < now
    assert not info.is_valid_at(now)
    with pytest.raises(ValueError, match="before it starts"):
        pki.issue_car(VIN, not_before=now, not_after=now - timedelta(seconds=1))


def test_times_come_from_the_clock(tmp_path: Path) -> None:
    clock = VirtualClock(start=1_800_000_000.0)
    pki = FleetPKI(tmp_path, clock, leaf_validity=timedelta(days=30))
    info = pki.ensure_car(VIN)
    issued_at = datetime.fromtimestamp(1_800_000_000.0, UTC)
    assert info.not_valid_after == issued_at + timedelta(days=30)
    assert info.not_valid_before < issued_at


def test_incomplete_ca_is_an_error_not_a_new_ca(tmp_path: Path) -> None:
    FleetPKI(tmp_path).ensure_ca()
    (tmp_path / "ca.key").unlink()
    with pytest.raises(PKIStateError, match="incomplete"):
        FleetPKI(tmp_path).ensure_car(VIN)


def test_many_cars_share_one_loaded_ca(pki: FleetPKI) -> None:
    rng = random.Random(7)
    vins = [generate_vin(rng) for _ in range(50)]
    infos = pki.ensure_cars(vins)
    assert len({info.serial for info in infos}) == 50
    assert sorted(p.stem for p in (pki.directory / "cars").glob("*.crt")) == sorted(vins)


def test_one_cloud_identity_per_cloud_process(pki: FleetPKI) -> None:
    assert [cloud_identity(n) for n in (1, 2, 3)] == ["cloud", "cloud-2", "cloud-3"]
    assert operator_identity(2) == "operator-2"
    assert identity_kind("cloud-2") is IdentityKind.CLOUD
    assert identity_kind("operator-8") is IdentityKind.OPERATOR
    for name in ("cloud-1", "cloud-02", "cloud-p3", "cloudy"):
        assert identity_kind(name) is IdentityKind.NAMED  # not a cloud process: no cloud rights
    second = pki.ensure_cloud("cloud-2")
    assert _cn(x509.load_pem_x509_certificate(second.paths.cert.read_bytes())) == "cloud-2"
    assert second.paths != pki.ensure_cloud().paths
    with pytest.raises(ValueError, match="not a cloud identity"):
        pki.ensure_cloud("operator")
    with pytest.raises(ValueError, match="identity number"):
        cloud_identity(0)


def test_operator_tools_lease_identities_of_their_own(pki: FleetPKI) -> None:
    with pki.lease_operator(pool=3) as first, pki.lease_operator(pool=3) as second:
        assert (first, second) == ("operator-2", "operator-3")
        assert pki.paths(first).cert.exists()  # issued on demand
        with pytest.raises(PKIStateError, match="in use"), pki.lease_operator(pool=3):
            pass
    with pki.lease_operator(pool=3) as again:
        assert again == "operator-2"  # released at the end of the block


def test_cloud_identities_are_leased_one_per_holder(pki: FleetPKI) -> None:
    # Sandbox clouds of several pytest workers on one broker: each its own certificate (client id = CN).
    with pki.lease_cloud(pool=2) as first, pki.lease_cloud(pool=2) as second:
        assert (first, second) == ("cloud", "cloud-2")
        with pytest.raises(PKIStateError, match="in use"), pki.lease_cloud(pool=2):
            pass
