"""Who gets through the device listener's TLS: fleet certificates only — not revoked, not expired, not foreign,
not none. Checked with a raw MQTT CONNECT that reports the broker's TLS alert by name (milliseconds, not a
client timeout)."""

from __future__ import annotations

import random
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from broker.pki import FleetPKI
from tcu_sim.protocol import generate_vin
from tcu_sim.testing import MosquittoBroker, probe_connect

pytestmark = pytest.mark.mosquitto

# VINs of their own: the PKI is shared by the tests of a worker, and these tests revoke or re-issue certificates.
_rng = random.Random("certificates")
REVOKED, KEPT, EXPIRED, FOREIGN = (generate_vin(_rng) for _ in range(4))


async def test_fleet_certificates_are_accepted(mosquitto: MosquittoBroker) -> None:
    for identity in (KEPT, "cloud", "operator"):
        outcome = await mosquitto.probe(identity)
        assert outcome.accepted, f"{identity}: {outcome}"


async def test_a_revoked_certificate_cannot_connect(mosquitto: MosquittoBroker) -> None:
    mosquitto.pki.issue_car(REVOKED)
    mosquitto.pki.ensure_car(KEPT)
    assert (await mosquitto.probe(REVOKED)).accepted

    await mosquitto.revoke(REVOKED)  # CRL rewritten, broker reloaded

    refused = await mosquitto.probe(REVOKED)
    assert not refused.accepted
    assert refused.tls_error == "SSLV3_ALERT_CERTIFICATE_REVOKED"
    assert (await mosquitto.probe(KEPT)).accepted  # the others are unaffected
    await mosquitto.wait_for_log("certificate verify failed")


async def test_a_revoked_certificate_stays_refused_after_a_restart(mosquitto: MosquittoBroker) -> None:
    vin = generate_vin(random.Random("revoked-then-restart"))
    mosquitto.pki.issue_car(vin)
    await mosquitto.revoke(vin)
    await mosquitto.restart()
    assert (await mosquitto.probe(vin)).tls_error == "SSLV3_ALERT_CERTIFICATE_REVOKED"


async def test_an_expired_certificate_cannot_connect(mosquitto: MosquittoBroker) -> None:
    now = datetime.now(UTC)
    mosquitto.pki.issue_car(EXPIRED, not_before=now - timedelta(days=30), not_after=now - timedelta(minutes=1))
    outcome = await mosquitto.probe(EXPIRED)
    assert not outcome.accepted
    assert outcome.tls_error == "SSLV3_ALERT_CERTIFICATE_EXPIRED"


async def test_a_not_yet_valid_certificate_cannot_connect(mosquitto: MosquittoBroker) -> None:
    now = datetime.now(UTC)
    name = "future-identity"
    mosquitto.pki.issue_identity(name, not_before=now + timedelta(days=1), not_after=now + timedelta(days=30))
    outcome = await mosquitto.probe(name)
    assert not outcome.accepted
    assert outcome.tls_error is not None


async def test_a_client_without_a_certificate_cannot_connect(mosquitto: MosquittoBroker) -> None:
    outcome = await mosquitto.probe(None)
    assert not outcome.accepted
    assert outcome.return_code is None  # refused in the TLS handshake, before any MQTT
    assert outcome.tls_error == "SSLV3_ALERT_HANDSHAKE_FAILURE"


async def test_a_certificate_from_another_ca_cannot_connect(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    stranger = FleetPKI(tmp_path / "other-ca")
    stranger.ensure_car(FOREIGN)
    context = stranger.client_ssl_context(FOREIGN)
    context.load_verify_locations(cafile=str(mosquitto.ca_cert))  # trust the broker, present the foreign car
    context.maximum_version = ssl.TLSVersion.TLSv1_2  # the broker's verdict then comes inside the handshake
    outcome = await probe_connect(mosquitto.host, mosquitto.port, ssl_context=context, client_id=FOREIGN)
    assert not outcome.accepted
    assert outcome.tls_error is not None
    assert outcome.tls_error.endswith("UNKNOWN_CA")


async def test_the_broker_proves_its_identity_to_clients(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    # A client trusting another CA refuses the broker: cars cannot be lured to a look-alike broker either.
    stranger = FleetPKI(tmp_path / "other-ca")
    stranger.ensure_ca()
    outcome = await probe_connect(
        mosquitto.host, mosquitto.port, ssl_context=stranger.client_ssl_context(None), client_id="x"
    )
    assert not outcome.accepted
    assert outcome.tls_error == "CERTIFICATE_VERIFY_FAILED"


async def test_the_app_listener_is_tls_too(mosquitto: MosquittoBroker) -> None:
    assert mosquitto.app_port is not None
    plaintext = await probe_connect(
        mosquitto.host, mosquitto.app_port, ssl_context=None, client_id="app-1", username="app-1", password="x"
    )
    assert not plaintext.accepted
    assert plaintext.return_code is None  # no CONNACK: the listener speaks TLS only
