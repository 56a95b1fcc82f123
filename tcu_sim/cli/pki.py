"""`tcu-sim pki ...`: the fleet PKI in `<state>/pki` — create it, issue certificates, revoke them, rewrite the CRL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from broker.pki import (
    DEFAULT_SERVER_NAMES,
    CertificateInfo,
    FleetPKI,
    IdentityKind,
    InvalidIdentityName,
    PKIError,
    identity_kind,
)
from tcu_sim.clock import SystemClock

__all__ = ["pki", "pki_for_state"]

pki = click.Group("pki", help="The fleet PKI (<state>/pki): CA, broker, cloud, operator and car certificates.")

_STATE = click.option(
    "--state",
    "state_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The provisioned state directory; the PKI lives in <state>/pki.",
)


def pki_for_state(state_dir: Path) -> FleetPKI:
    """The fleet PKI of a state directory (real time: a real broker checks the certificates)."""
    return FleetPKI(state_dir / "pki", SystemClock())


def _fail(where: Path, exc: Exception) -> click.ClickException:
    return click.ClickException(f"{where}: {exc}")


def _describe(info: CertificateInfo) -> str:
    return (
        f"{info.name}: serial {info.serial:x}, valid {info.not_valid_before:%Y-%m-%d %H:%M} .. "
        f"{info.not_valid_after:%Y-%m-%d %H:%M} UTC, {info.paths.cert} (key {info.paths.key})"
    )


@pki.command("init")
@_STATE
@click.option("--host", "hosts", multiple=True, help="Another name or IP of the broker for its certificate (repeat).")
def init_command(state_dir: Path, hosts: tuple[str, ...]) -> None:
    """Create the CA, the broker's certificate, the cloud's and the operator's, and an empty CRL (keeps what exists)."""
    fleet_pki = pki_for_state(state_dir)
    try:
        had_ca = fleet_pki.has_ca()
        ca = fleet_pki.ensure_ca()
        names = tuple(dict.fromkeys((*DEFAULT_SERVER_NAMES, *hosts)))
        issued = [fleet_pki.ensure_server(names), fleet_pki.ensure_cloud(), fleet_pki.ensure_operator()]
    except (PKIError, ValueError) as exc:
        raise _fail(fleet_pki.directory, exc) from None
    click.echo(f"{fleet_pki.directory}: CA {'kept' if had_ca else 'created'}: {_describe(ca)}")
    for info in issued:
        click.echo(f"  {_describe(info)}")
    click.echo(f"  CRL: {fleet_pki.crl_path}")


def _validity(valid_days: float | None, expired: bool) -> tuple[datetime | None, datetime | None]:
    now = datetime.now(UTC)
    if expired:
        return now - timedelta(days=2), now - timedelta(days=1)
    if valid_days is not None:
        return None, now + timedelta(days=valid_days)
    return None, None


def _issue(state_dir: Path, name: str, force: bool, valid_days: float | None, expired: bool) -> None:
    fleet_pki = pki_for_state(state_dir)
    not_before, not_after = _validity(valid_days, expired)
    try:
        identity_kind(name)
        if force or not_before is not None or not_after is not None:
            info = fleet_pki.issue(name, not_before=not_before, not_after=not_after)
            verb = "issued"
        else:
            before = fleet_pki.certificate(name).serial if fleet_pki.paths(name).cert.exists() else None
            info = fleet_pki.ensure(name)
            verb = "kept" if info.serial == before else "issued"
    except (PKIError, ValueError) as exc:
        raise _fail(fleet_pki.directory, exc) from None
    click.echo(f"{verb} {_describe(info)}")


_ISSUE_OPTIONS = [
    click.option("--force", is_flag=True, help="Issue a new key and certificate even if one exists."),
    click.option(
        "--valid-days", type=click.FloatRange(min=0, min_open=True), help="Validity from now (implies --force)."
    ),
    click.option("--expired", is_flag=True, help="Issue an already-expired certificate, for tests (implies --force)."),
]


def _with_issue_options(function: click.decorators.FC) -> click.decorators.FC:
    for option in reversed(_ISSUE_OPTIONS):
        function = option(function)
    return function


@pki.command("issue-car")
@click.argument("vin")
@_STATE
@_with_issue_options
def issue_car_command(vin: str, state_dir: Path, force: bool, valid_days: float | None, expired: bool) -> None:
    """The certificate of the car VIN (CN = VIN): kept when it exists, else issued."""
    try:
        if identity_kind(vin) is not IdentityKind.CAR:
            raise click.ClickException(f"{vin!r}: not a VIN (use `tcu-sim pki issue NAME` for other identities)")
    except InvalidIdentityName as exc:
        raise click.ClickException(f"{vin!r}: {exc}") from None
    _issue(state_dir, vin, force, valid_days, expired)


@pki.command("issue")
@click.argument("name")
@_STATE
@_with_issue_options
def issue_command(name: str, state_dir: Path, force: bool, valid_days: float | None, expired: bool) -> None:
    """The certificate of NAME: a VIN, `cloud` (`cloud-2`, ... for more cloud processes), `operator(-N)` or a
    named app/test identity (lower-case)."""
    if name == "server":
        raise click.ClickException("'server': the broker's certificate comes from `tcu-sim pki init`")
    _issue(state_dir, name, force, valid_days, expired)


@pki.command("revoke")
@click.argument("target")
@_STATE
@click.option("--serial", "by_serial", is_flag=True, help="TARGET is a serial number (hex), not a name.")
def revoke_command(target: str, state_dir: Path, by_serial: bool) -> None:
    """Revoke the current certificate of TARGET (or a serial) and rewrite the CRL; then reload the broker."""
    fleet_pki = pki_for_state(state_dir)
    if not fleet_pki.has_ca():
        raise click.ClickException(f"{fleet_pki.directory}: no CA here (run `tcu-sim pki init` first)")
    try:
        serial = fleet_pki.revoke(int(target.removeprefix("0x"), 16) if by_serial else target)
    except ValueError as exc:
        raise click.ClickException(f"{target!r}: not a hex serial ({exc})") from None
    except PKIError as exc:
        raise _fail(fleet_pki.directory, exc) from None
    click.echo(f"revoked serial {serial:x}; CRL: {fleet_pki.crl_path}")
    click.echo("Mosquitto reads the CRL at start and on reload: send it SIGHUP (kill -HUP <pid>).")


@pki.command("crl")
@_STATE
def crl_command(state_dir: Path) -> None:
    """Rewrite the CRL from the revocation record and list what is revoked."""
    fleet_pki = pki_for_state(state_dir)
    if not fleet_pki.has_ca():
        raise click.ClickException(f"{fleet_pki.directory}: no CA here (run `tcu-sim pki init` first)")
    try:
        path = fleet_pki.write_crl()
        serials = sorted(fleet_pki.revoked_serials())
    except PKIError as exc:
        raise _fail(fleet_pki.directory, exc) from None
    click.echo(f"{path}: {len(serials)} revoked")
    for serial in serials:
        click.echo(f"  {serial:x}")
