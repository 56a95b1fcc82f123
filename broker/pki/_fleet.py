"""The fleet PKI: one CA, the broker's server certificate, and one client certificate per identity.

Layout of the directory (every private key is written with mode 0600, atomically):

    ca.crt, ca.key              the fleet CA (ECDSA P-256, self-signed)
    server.crt, server.key      the broker (SAN localhost, 127.0.0.1, ::1 by default)
    cars/<VIN>.crt, .key        one per car, CN = VIN
    identities/<name>.crt, .key cloud(-N), operator(-N), and any named app/test identity (CN = name)
    leases/<name>.lock          which operator identity a running tool holds (`lease_operator`)
    revoked.json                what was revoked (serial, name, when) and the CRL number
    crl.pem                     the CRL, always present (maybe empty): Mosquitto's `crlfile` is always valid

`ensure_*` methods reuse what is on disk (idempotent: a second provisioning run issues nothing); `issue_*`
methods always issue a new key and certificate (a new serial). Revocation sticks: `ensure_*` never silently
replaces a revoked or expired certificate — re-issue explicitly.

The CA is loaded once per `FleetPKI` object, so issuing thousands of certificates costs one key generation and
one signature each. Times (validity, CRL dates) come from the `Clock`; the broker checks them against real
time, so pass a `SystemClock` (the default) for certificates a real broker will see.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import ssl
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import ip_address
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tcu_sim.clock import Clock, SystemClock

from ._errors import PKIStateError, UnknownIdentity
from ._names import (
    CLOUD,
    OPERATOR,
    SERVER,
    IdentityKind,
    cloud_identity,
    identity_kind,
    operator_identity,
    validate_named_identity,
)

__all__ = ["DEFAULT_SERVER_NAMES", "OPERATOR_POOL", "CertificateInfo", "FleetPKI", "IdentityPaths"]

# How many operator identities the broker's ACL knows (`operator`, `operator-2` ... `operator-8`): one per
# operator tool running at the same time.
OPERATOR_POOL = 8

DEFAULT_SERVER_NAMES: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")

_CA_NAME = "tcu-sim fleet CA"
_SIGNATURE_HASH = hashes.SHA256()
# Tolerate hosts whose clocks run a little behind the one that issued the certificate.
_BACKDATE = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class IdentityPaths:
    """Where an identity's certificate and private key live (the key file is mode 0600)."""

    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """What a certificate on disk says about itself (no key material)."""

    name: str
    kind: IdentityKind
    serial: int
    not_valid_before: datetime
    not_valid_after: datetime
    paths: IdentityPaths

    def is_valid_at(self, when: datetime) -> bool:
        """True when `when` lies inside the validity period."""
        return self.not_valid_before <= when <= self.not_valid_after


@dataclass(frozen=True, slots=True)
class _Revoked:
    serial: int
    name: str | None
    revoked_at: float


class _CA:
    """The loaded CA: its key signs everything. Its repr never shows the key."""

    __slots__ = ("cert", "key", "key_id")

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.cert = cert
        self.key = key
        self.key_id = x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest

    def __repr__(self) -> str:
        return f"_CA(subject={self.cert.subject.rfc4514_string()!r}, serial={self.cert.serial_number:#x})"


class FleetPKI:
    """The fleet's certificate authority and every certificate it issued, in one directory."""

    def __init__(
        self,
        directory: Path,
        clock: Clock | None = None,
        *,
        organization: str = "tcu-sim",
        ca_validity: timedelta = timedelta(days=3650),
        leaf_validity: timedelta = timedelta(days=825),
        crl_validity: timedelta = timedelta(days=365),
    ) -> None:
        self.directory = Path(directory)
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.organization = organization
        self.ca_validity = ca_validity
        self.leaf_validity = leaf_validity
        self.crl_validity = crl_validity
        self._ca: _CA | None = None

    # --- paths
    @property
    def ca_cert_path(self) -> Path:
        """The CA certificate (what every client and the broker trust)."""
        return self.directory / "ca.crt"

    @property
    def ca_key_path(self) -> Path:
        """The CA private key (mode 0600)."""
        return self.directory / "ca.key"

    @property
    def crl_path(self) -> Path:
        """The certificate revocation list (PEM), always present once the CA exists."""
        return self.directory / "crl.pem"

    @property
    def revoked_path(self) -> Path:
        """The record of revocations the CRL is built from."""
        return self.directory / "revoked.json"

    def paths(self, name: str) -> IdentityPaths:
        """Certificate and key paths of `name` (a VIN, `cloud`, `operator`, `server` or a named identity).

        The files may not exist yet; the name is validated (InvalidIdentityName).
        """
        kind = identity_kind(name)
        if kind is IdentityKind.SERVER:
            return IdentityPaths(self.directory / "server.crt", self.directory / "server.key")
        folder = self.directory / ("cars" if kind is IdentityKind.CAR else "identities")
        return IdentityPaths(folder / f"{name}.crt", folder / f"{name}.key")

    @property
    def server_paths(self) -> IdentityPaths:
        """The broker's certificate and key."""
        return self.paths(SERVER)

    # --- the CA
    def has_ca(self) -> bool:
        """True when a CA certificate exists in the directory."""
        return self.ca_cert_path.exists()

    def ensure_ca(self) -> CertificateInfo:
        """Load the CA, creating it (and an empty CRL) when the directory has none."""
        if self._ca is None:
            if self.ca_cert_path.exists() or self.ca_key_path.exists():
                self._ca = self._load_ca()
            else:
                self._ca = self._create_ca()
        if not self.crl_path.exists():
            self._write_crl(self._ca)
        return self._info(self._ca.cert, "ca", IdentityKind.CA, IdentityPaths(self.ca_cert_path, self.ca_key_path))

    def _require_ca(self) -> _CA:
        self.ensure_ca()
        assert self._ca is not None  # ensure_ca sets it or raises
        return self._ca

    def _create_ca(self) -> _CA:
        self.directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        now = self._now()
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.organization),
                x509.NameAttribute(NameOID.COMMON_NAME, _CA_NAME),
            ]
        )
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + self.ca_validity)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
            .sign(key, _SIGNATURE_HASH)
        )
        _write_private(self.ca_key_path, _key_pem(key))
        _write_public(self.ca_cert_path, cert.public_bytes(serialization.Encoding.PEM))
        return _CA(cert, key)

    def _load_ca(self) -> _CA:
        if not self.ca_cert_path.exists() or not self.ca_key_path.exists():
            raise PKIStateError(
                f"{self.directory}: the CA is incomplete (need both ca.crt and ca.key); "
                "restore the missing file or start from an empty directory"
            )
        try:
            cert = x509.load_pem_x509_certificate(self.ca_cert_path.read_bytes())
            key = serialization.load_pem_private_key(self.ca_key_path.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            # The library's message may quote the file; say only which file is unreadable.
            raise PKIStateError(f"{self.directory}: cannot read the CA certificate or key") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PKIStateError(f"{self.ca_key_path}: the CA key is not an EC key")
        if cert.public_key() != key.public_key():
            raise PKIStateError(f"{self.directory}: ca.key does not belong to ca.crt")
        return _CA(cert, key)

    # --- issuing
    def ensure_server(self, hostnames: Sequence[str] = DEFAULT_SERVER_NAMES) -> CertificateInfo:
        """The broker's certificate, issued when missing or when it lacks one of `hostnames`."""
        existing = self._existing(SERVER)
        if existing is not None:
            cert = x509.load_pem_x509_certificate(existing.paths.cert.read_bytes())
            if set(_san_strings(cert)) >= set(hostnames):
                return existing
        return self.issue_server(hostnames)

    def issue_server(
        self,
        hostnames: Sequence[str] = DEFAULT_SERVER_NAMES,
        *,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
    ) -> CertificateInfo:
        """Issue a new broker certificate with `hostnames` (DNS names or IP addresses) as SAN."""
        if not hostnames:
            raise ValueError("a server certificate needs at least one hostname")
        names: list[x509.GeneralName] = []
        for host in hostnames:
            try:
                names.append(x509.IPAddress(ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        return self._issue(
            SERVER,
            IdentityKind.SERVER,
            common_name=hostnames[0],
            usage=ExtendedKeyUsageOID.SERVER_AUTH,
            san=names,
            not_before=not_before,
            not_after=not_after,
        )

    def ensure_car(self, vin: str) -> CertificateInfo:
        """The car's certificate (CN = VIN), issued when missing."""
        return self._ensure(vin, IdentityKind.CAR)

    def issue_car(
        self, vin: str, *, not_before: datetime | None = None, not_after: datetime | None = None
    ) -> CertificateInfo:
        """Issue a new key and certificate for the car `vin` (CN = VIN)."""
        return self._issue_client(vin, IdentityKind.CAR, not_before=not_before, not_after=not_after)

    def ensure_cars(self, vins: Iterable[str]) -> list[CertificateInfo]:
        """`ensure_car` for many cars (the CA is loaded once)."""
        self._require_ca()
        return [self.ensure_car(vin) for vin in vins]

    def ensure_cloud(self, name: str = CLOUD) -> CertificateInfo:
        """A cloud process's certificate (CN `cloud`, or `cloud-2`, `cloud-3`, ... for more), issued when missing."""
        return self._ensure(_cloud_name(name), IdentityKind.CLOUD)

    def issue_cloud(
        self, name: str = CLOUD, *, not_before: datetime | None = None, not_after: datetime | None = None
    ) -> CertificateInfo:
        """Issue a new certificate for a cloud process (CN `cloud`, `cloud-2`, ...)."""
        return self._issue_client(_cloud_name(name), IdentityKind.CLOUD, not_before=not_before, not_after=not_after)

    def ensure_operator(self) -> CertificateInfo:
        """The operator's certificate (CN `operator`: simulator control, live view), issued when missing."""
        return self._ensure(OPERATOR, IdentityKind.OPERATOR)

    def issue_operator(
        self, *, not_before: datetime | None = None, not_after: datetime | None = None
    ) -> CertificateInfo:
        """Issue a new certificate for the operator (CN `operator`)."""
        return self._issue_client(OPERATOR, IdentityKind.OPERATOR, not_before=not_before, not_after=not_after)

    @contextlib.contextmanager
    def lease_operator(self, pool: int = OPERATOR_POOL) -> Iterator[str]:
        """Hold one operator identity (`operator-2` ... `operator-<pool>`) for the life of the `with` block.

        The client id is the certificate's CN (SPEC §7), so two operator tools sharing one certificate would
        disconnect each other: each tool leases a free one instead (an exclusive `flock` on
        `leases/<name>.lock`, released by the kernel even when the process dies), issued when missing. `operator`
        itself is left to long-lived users. PKIStateError when every identity of the pool is held.
        """
        with self._lease([operator_identity(n) for n in range(2, pool + 1)]) as name:
            yield name

    @contextlib.contextmanager
    def lease_cloud(self, pool: int = OPERATOR_POOL) -> Iterator[str]:
        """Hold one cloud identity (`cloud`, `cloud-2` ... `cloud-<pool>`) that no other process using this PKI
        holds, for the life of the `with` block (test clouds sharing one broker); see `lease_operator`."""
        with self._lease([cloud_identity(n) for n in range(1, pool + 1)]) as name:
            yield name

    @contextlib.contextmanager
    def _lease(self, names: Sequence[str]) -> Iterator[str]:
        leases = self.directory / "leases"
        leases.mkdir(parents=True, exist_ok=True)
        for name in names:
            fd = os.open(leases / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                self.ensure(name)
                yield name
            finally:
                os.close(fd)  # closing the descriptor releases the lock
            return
        raise PKIStateError(f"all {len(names)} identities ({names[0]} .. {names[-1]}) are in use")

    def ensure_identity(self, name: str) -> CertificateInfo:
        """The certificate of a named identity (an app or test client, CN = name), issued when missing."""
        kind = identity_kind(validate_named_identity(name))
        if kind is IdentityKind.SERVER:
            raise ValueError("use ensure_server() for the broker's certificate")
        return self._ensure(name, kind)

    def issue_identity(
        self, name: str, *, not_before: datetime | None = None, not_after: datetime | None = None
    ) -> CertificateInfo:
        """Issue a new certificate for a named identity (CN = name)."""
        kind = identity_kind(validate_named_identity(name))
        if kind is IdentityKind.SERVER:
            raise ValueError("use issue_server() for the broker's certificate")
        return self._issue_client(name, kind, not_before=not_before, not_after=not_after)

    def issue(
        self, name: str, *, not_before: datetime | None = None, not_after: datetime | None = None
    ) -> CertificateInfo:
        """Issue a client certificate for any name: a VIN, `cloud`, `operator` or a named identity."""
        kind = identity_kind(name)
        if kind is IdentityKind.SERVER:
            raise ValueError("use issue_server() for the broker's certificate")
        return self._issue_client(name, kind, not_before=not_before, not_after=not_after)

    def ensure(self, name: str) -> CertificateInfo:
        """`ensure_*` for any client name: a VIN, `cloud`, `operator` or a named identity."""
        kind = identity_kind(name)
        if kind is IdentityKind.SERVER:
            return self.ensure_server()
        return self._ensure(name, kind)

    def _ensure(self, name: str, kind: IdentityKind) -> CertificateInfo:
        existing = self._existing(name)
        if existing is not None:
            return existing
        return self._issue_client(name, kind, not_before=None, not_after=None)

    def _existing(self, name: str) -> CertificateInfo | None:
        """The certificate on disk for `name` if it was issued by this CA and its key is there too."""
        ca = self._require_ca()
        paths = self.paths(name)
        try:
            data = paths.cert.read_bytes()
        except FileNotFoundError:
            return None
        if not paths.key.exists():
            return None
        try:
            cert = x509.load_pem_x509_certificate(data)
        except ValueError:
            return None  # a damaged file is replaced by a fresh certificate
        if cert.issuer != ca.cert.subject or _authority_key_id(cert) != ca.key_id:
            return None  # issued by an earlier CA: useless with this one
        return self._info(cert, name, identity_kind(name), paths)

    def _issue_client(
        self, name: str, kind: IdentityKind, *, not_before: datetime | None, not_after: datetime | None
    ) -> CertificateInfo:
        return self._issue(
            name,
            kind,
            common_name=name,
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
            san=None,
            not_before=not_before,
            not_after=not_after,
        )

    def _issue(
        self,
        name: str,
        kind: IdentityKind,
        *,
        common_name: str,
        usage: x509.ObjectIdentifier,
        san: list[x509.GeneralName] | None,
        not_before: datetime | None,
        not_after: datetime | None,
    ) -> CertificateInfo:
        ca = self._require_ca()
        paths = self.paths(name)
        now = self._now()
        start = not_before if not_before is not None else now - _BACKDATE
        end = not_after if not_after is not None else now + self.leaf_validity
        if end <= start:
            raise ValueError(f"certificate for {name!r} would end ({end:%Y-%m-%d %H:%M}) before it starts")
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.organization),
                        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                    ]
                )
            )
            .issuer_name(ca.cert.subject)
            .public_key(key.public_key())
            # Serials must be unpredictable (CA/B baseline): from the OS CSPRNG, not the simulation's Random.
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier(ca.key_id, None, None), critical=False)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        cert = builder.sign(ca.key, _SIGNATURE_HASH)
        paths.cert.parent.mkdir(parents=True, exist_ok=True)
        # Key first: a certificate on disk always has its key next to it.
        _write_private(paths.key, _key_pem(key))
        _write_public(paths.cert, cert.public_bytes(serialization.Encoding.PEM))
        return self._info(cert, name, kind, paths)

    # --- looking up
    def certificate(self, name: str) -> CertificateInfo:
        """What the current certificate of `name` says; UnknownIdentity when none was issued."""
        paths = self.paths(name)
        try:
            cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
        except FileNotFoundError:
            raise UnknownIdentity(f"no certificate issued for {name!r}") from None
        except ValueError as exc:
            raise PKIStateError(f"{paths.cert}: not a PEM certificate") from exc
        return self._info(cert, name, identity_kind(name), paths)

    def load_certificate(self, name: str) -> x509.Certificate:
        """The current certificate of `name` as a `cryptography` object (for verification in tests)."""
        info = self.certificate(name)
        return x509.load_pem_x509_certificate(info.paths.cert.read_bytes())

    def ca_certificate(self) -> x509.Certificate:
        """The CA certificate as a `cryptography` object."""
        return self._require_ca().cert

    # --- revocation
    def revoke(self, target: str | int) -> int:
        """Revoke a certificate by serial (int) or by name (its current certificate); rewrite the CRL.

        Returns the revoked serial. Revoking twice is harmless. UnknownIdentity when `target` names nothing.
        """
        self._require_ca()
        if isinstance(target, int):
            serial, name = target, None
        else:
            info = self.certificate(target)
            serial, name = info.serial, info.name
        state = self._read_revoked()
        entries: list[_Revoked] = state["entries"]
        if all(entry.serial != serial for entry in entries):
            entries.append(_Revoked(serial=serial, name=name, revoked_at=self.clock.now()))
            self._write_revoked(entries, state["crl_number"])
        self.write_crl()
        return serial

    def revoked_serials(self) -> frozenset[int]:
        """Every serial revoked so far."""
        return frozenset(entry.serial for entry in self._read_revoked()["entries"])

    def is_revoked(self, serial: int) -> bool:
        """True when `serial` was revoked."""
        return serial in self.revoked_serials()

    def write_crl(self) -> Path:
        """(Re)write the CRL from the revocation record (empty when nothing is revoked); return its path."""
        return self._write_crl(self._require_ca())

    def _write_crl(self, ca: _CA) -> Path:
        state = self._read_revoked()
        number = state["crl_number"] + 1
        now = self._now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca.cert.subject)
            # OpenSSL refuses every client while a CRL is "not yet valid": backdate like the certificates.
            .last_update(now - _BACKDATE)
            .next_update(now + self.crl_validity)
            .add_extension(x509.CRLNumber(number), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier(ca.key_id, None, None), critical=False)
        )
        for entry in state["entries"]:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(entry.serial)
                .revocation_date(datetime.fromtimestamp(entry.revoked_at, UTC))
                .build()
            )
        crl = builder.sign(ca.key, _SIGNATURE_HASH)
        self._write_revoked(state["entries"], number)
        _write_public(self.crl_path, crl.public_bytes(serialization.Encoding.PEM))
        return self.crl_path

    def _read_revoked(self) -> dict[str, Any]:
        try:
            raw = json.loads(self.revoked_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"crl_number": 0, "entries": []}
        except (ValueError, UnicodeDecodeError) as exc:
            raise PKIStateError(f"{self.revoked_path}: not valid JSON") from exc
        try:
            entries = [
                _Revoked(
                    serial=int(item["serial"], 16),
                    name=item.get("name"),
                    revoked_at=float(item["revoked_at"]),
                )
                for item in raw["revoked"]
            ]
            return {"crl_number": int(raw["crl_number"]), "entries": entries}
        except (KeyError, TypeError, ValueError) as exc:
            raise PKIStateError(f"{self.revoked_path}: unexpected content ({exc!r})") from exc

    def _write_revoked(self, entries: Sequence[_Revoked], crl_number: int) -> None:
        body = {
            "crl_number": crl_number,
            "revoked": [{"serial": f"{e.serial:x}", "name": e.name, "revoked_at": e.revoked_at} for e in entries],
        }
        _write_public(self.revoked_path, (json.dumps(body, indent=2) + "\n").encode())

    # --- TLS contexts
    def client_ssl_context(self, name: str | None = None) -> ssl.SSLContext:
        """A TLS client context trusting the fleet CA, presenting `name`'s certificate (None: no certificate).

        Hostname checking stays on: the server certificate names localhost, 127.0.0.1 and ::1 by default.
        """
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_cert_path))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if name is not None:
            paths = self.paths(name)
            if not paths.cert.exists():
                raise UnknownIdentity(f"no certificate issued for {name!r}")
            context.load_cert_chain(str(paths.cert), str(paths.key))
        return context

    def server_ssl_context(self, *, verify_clients: bool = True) -> ssl.SSLContext:
        """A TLS server context with the broker certificate (issued if missing).

        With `verify_clients` every client must present a certificate from the fleet CA that is not on the CRL
        (read now: a later revocation needs a new context); without, clients are not asked for one.
        """
        server = self.ensure_server()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(server.paths.cert), str(server.paths.key))
        if verify_clients:
            context.load_verify_locations(cafile=str(self.ca_cert_path))
            context.load_verify_locations(cafile=str(self.crl_path))
            context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    # --- helpers
    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.now(), UTC)

    @staticmethod
    def _info(cert: x509.Certificate, name: str, kind: IdentityKind, paths: IdentityPaths) -> CertificateInfo:
        return CertificateInfo(
            name=name,
            kind=kind,
            serial=cert.serial_number,
            not_valid_before=cert.not_valid_before_utc,
            not_valid_after=cert.not_valid_after_utc,
            paths=paths,
        )

    def __repr__(self) -> str:
        state = "loaded" if self._ca is not None else ("present" if self.has_ca() else "absent")
        return f"FleetPKI(directory={str(self.directory)!r}, ca={state})"


def _cloud_name(name: str) -> str:
    if identity_kind(name) is not IdentityKind.CLOUD:
        raise ValueError(f"{name[:70]!r} is not a cloud identity (cloud, cloud-2, cloud-3, ...)")
    return name


def _authority_key_id(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except x509.ExtensionNotFound:
        return None


def _san_strings(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [
        *san.get_values_for_type(x509.DNSName),
        *(str(ip) for ip in san.get_values_for_type(x509.IPAddress)),
    ]


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    # Unencrypted PKCS#8: Mosquitto and paho read it without a passphrase; file mode 0600 protects it.
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write_private(path: Path, data: bytes) -> None:
    """Write a secret atomically; created 0600, so it is never readable by others, not even briefly."""
    _atomic_write(path, data, 0o600)


def _write_public(path: Path, data: bytes) -> None:
    _atomic_write(path, data, 0o644)


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        # Narrow (or widen past the umask) before any byte is written, also when a stale temp file existed.
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
