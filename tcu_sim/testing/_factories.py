"""The call signatures of the plugin's factory fixtures, for type annotations in tests (no pytest import)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ._fleet import SimFleet
    from ._user import SimUser

__all__ = ["AppUserFactory", "FleetFactory"]


class FleetFactory(Protocol):
    """`await fleet_factory(source, proxy=..., online_timeout=...)`: start another fleet in the test's sandbox."""

    def __call__(
        self, source: Any = None, *, proxy: str = "none", online_timeout: float | None = None
    ) -> Awaitable[SimFleet]: ...


class AppUserFactory(Protocol):
    """`await app_user_factory(email, password=..., spin=..., verified=..., logged_in=...)`: another app user."""

    def __call__(
        self,
        email: str | None = None,
        *,
        password: str = ...,
        spin: str = ...,
        verified: bool = True,
        logged_in: bool = True,
    ) -> Awaitable[SimUser]: ...
