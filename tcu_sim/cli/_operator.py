"""The certificate an operator tool (`tcu-sim car`, `tcu-sim fault`) connects with.

The broker makes a certificate holder's client id its CN (SPEC §7), so two tools presenting the one `operator`
certificate would disconnect each other. Each command leases an operator identity of its own (`operator-2` ...,
`FleetPKI.lease_operator`) for as long as it runs.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import click

from broker.pki import FleetPKI, PKIError
from tcu_sim.cli._broker_url import tls_context

__all__ = ["operator_login"]


def operator_login(state_dir: Path) -> tuple[str, ssl.SSLContext]:
    """(client id, TLS context) of an operator identity held until the click command ends."""
    pki = FleetPKI(state_dir / "pki")
    if not pki.has_ca():
        raise click.ClickException(f"{pki.directory}: no fleet CA here (tcu-sim fleet provision, or --state)")
    try:
        identity = click.get_current_context().with_resource(pki.lease_operator())
    except PKIError as exc:
        raise click.ClickException(f"{pki.directory}: {exc}") from None
    paths = pki.paths(identity)
    return identity, tls_context(ca=pki.ca_cert_path, cert=paths.cert, key=paths.key)
