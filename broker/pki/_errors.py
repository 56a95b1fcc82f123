"""Errors of the fleet PKI, grouped by what the caller does about them."""

from __future__ import annotations

__all__ = ["InvalidIdentityName", "PKIError", "PKIStateError", "UnknownIdentity"]


class PKIError(Exception):
    """Root of every error `broker.pki` raises. Messages never carry key material."""


class InvalidIdentityName(PKIError, ValueError):
    """A certificate name that is neither a valid VIN nor a safe identity name (fix the input)."""


class UnknownIdentity(PKIError, LookupError):
    """No certificate has been issued under this name or serial (issue it first)."""


class PKIStateError(PKIError):
    """The PKI directory is missing or inconsistent (no CA, a certificate without its key, a corrupt file)."""
