"""The fault layer's exceptions: one root, subclasses grouped by what the caller does about them.

- `FaultSpecError` — a fault, toxic or expectation that does not make sense (fix the input);
- `FaultUnavailable` — a fault this run cannot apply (no fault proxy, no broker the run started, no cloud);
- `ProxyError` / `ToxiproxyError` — the network fault machinery failed (retry, or check the server);
- `BrokerControlError` — the broker control socket of a run could not be reached or refused the request.
"""

from __future__ import annotations

__all__ = [
    "BrokerControlError",
    "FaultError",
    "FaultSpecError",
    "FaultUnavailable",
    "ProxyError",
    "ToxiproxyError",
]


class FaultError(Exception):
    """Root of every error raised by `tcu_sim.faults`."""


class FaultSpecError(FaultError, ValueError):
    """A fault or expectation that is malformed: `str()` names the field and the problem."""


class FaultUnavailable(FaultError):
    """The fault is valid but this run cannot apply it (e.g. a transport fault in a run without a proxy)."""


class ProxyError(FaultError):
    """The in-process fault proxy could not listen or reach its upstream."""


class ToxiproxyError(FaultError):
    """A Toxiproxy server refused a request or could not be reached; `status` is the HTTP status (0: none)."""

    def __init__(self, message: str, *, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class BrokerControlError(FaultError):
    """The broker control socket of a run is missing, or the run could not do what was asked."""
