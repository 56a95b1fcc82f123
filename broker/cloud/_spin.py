"""S-PIN check with lockout (R3).

Three wrong S-PINs in a row lock the S-PIN for `spin_lock_s`; every new lock lasts twice as long as the one
before (capped at `spin_lock_max_s`). A correct S-PIN resets the count of failures and of locks. The state is
kept per user in the registry and changed in one atomic step, so the count holds across sessions, apps and
cloud processes: two processes checking wrong S-PINs at the same moment count two failures, never one.
"""

from __future__ import annotations

import dataclasses

from broker.registry import SpinState, UserRecord

from ._context import ServiceContext
from ._errors import SpinIncorrect, SpinLocked, SpinRequired

__all__ = ["SpinGuard", "register_failure"]


def register_failure(state: SpinState, now: float, *, max_tries: int, lock_s: float, max_lock_s: float) -> SpinState:
    """The state after one more wrong S-PIN (pure). While locked nothing is counted."""
    if state.locked_until is not None and now < state.locked_until:
        return state
    failures = state.failures + 1
    if failures < max_tries:
        return dataclasses.replace(state, failures=failures)
    duration = min(max_lock_s, lock_s * 2.0 ** min(state.lock_count, 60))
    return dataclasses.replace(state, failures=0, locked_until=now + duration, lock_count=state.lock_count + 1)


class SpinGuard:
    """Checks a user's S-PIN, counting failures and locking per R3."""

    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        self._reg = ctx.registry

    def __repr__(self) -> str:
        c = self._ctx.config
        return f"SpinGuard(max_tries={c.spin_max_tries}, lock_s={c.spin_lock_s})"

    async def verify(self, user: UserRecord, spin: str | None, *, vin: str | None = None) -> None:
        """Return when `spin` is the user's S-PIN; otherwise raise `SpinRequired` (none given),
        `SpinIncorrect(remaining_tries)` or `SpinLocked(locked_seconds)` (also when this try caused the lock)."""
        if spin is None or spin == "":
            raise SpinRequired()
        now = self._ctx.now()
        state = await self._reg.get_spin_state(user.id)
        if state.locked_until is not None and now < state.locked_until:
            await self._ctx.audit("spin.check", "locked", user_id=user.id, vin=vin)
            raise SpinLocked(state.locked_until - now)
        if isinstance(spin, str) and self._ctx.secret.spin_matches(user.spin_hash, user.id, spin):
            if state.failures or state.lock_count:
                await self._reg.update_spin_state(user.id, lambda s: SpinState(user_id=s.user_id))
            return
        cfg = self._ctx.config
        locked_by_this_try = False

        def count_failure(current: SpinState) -> SpinState:
            nonlocal locked_by_this_try
            after = register_failure(
                current, now, max_tries=cfg.spin_max_tries, lock_s=cfg.spin_lock_s, max_lock_s=cfg.spin_lock_max_s
            )
            locked_by_this_try = after.lock_count > current.lock_count
            return after

        new = await self._reg.update_spin_state(user.id, count_failure)
        if new.locked_until is not None and now < new.locked_until:
            locked_s = new.locked_until - now
            if locked_by_this_try:
                await self._ctx.audit(
                    "spin.locked", "locked", user_id=user.id, vin=vin, lock_count=new.lock_count,
                    locked_seconds=round(locked_s),
                )
            else:  # another session or process locked it between our read and our write
                await self._ctx.audit("spin.check", "locked", user_id=user.id, vin=vin)
            raise SpinLocked(locked_s)
        remaining = cfg.spin_max_tries - new.failures
        await self._ctx.audit("spin.failed", "refused", user_id=user.id, vin=vin, remaining_tries=remaining)
        raise SpinIncorrect(remaining)
