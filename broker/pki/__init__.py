"""The fleet PKI (SPEC §7): a CA, the broker's certificate, and one client certificate per car and service.

Each car authenticates to the broker with its own certificate, CN = VIN, signed by the fleet CA; the broker
maps the CN to the MQTT username and client id and lets the car use only its own topics. Each cloud process
(CN `cloud`, `cloud-2`, ...), each operator tool (CN `operator`, `operator-2`, ...) and optional named app/test
identities get certificates from the same CA. Revoked
certificates are listed in a CRL that always exists, so the broker's `crlfile` setting is always valid.

    pki = FleetPKI(state_dir / "pki")
    pki.ensure_ca(); pki.ensure_server(); pki.ensure_cloud(); pki.ensure_cars(vins)
    context = pki.client_ssl_context(vin)   # for aiomqtt/paho
    pki.revoke(vin)                         # rewrites crl.pem
"""

from __future__ import annotations

from ._errors import InvalidIdentityName, PKIError, PKIStateError, UnknownIdentity
from ._fleet import DEFAULT_SERVER_NAMES, OPERATOR_POOL, CertificateInfo, FleetPKI, IdentityPaths
from ._names import (
    CLOUD,
    OPERATOR,
    RECORDER,
    SERVER,
    IdentityKind,
    cloud_identity,
    identity_kind,
    operator_identity,
    validate_identity_name,
    validate_named_identity,
)

__all__ = [
    "CLOUD",
    "DEFAULT_SERVER_NAMES",
    "OPERATOR",
    "OPERATOR_POOL",
    "RECORDER",
    "SERVER",
    "CertificateInfo",
    "FleetPKI",
    "IdentityKind",
    "IdentityPaths",
    "InvalidIdentityName",
    "PKIError",
    "PKIStateError",
    "UnknownIdentity",
    "cloud_identity",
    "identity_kind",
    "operator_identity",
    "validate_identity_name",
    "validate_named_identity",
]
