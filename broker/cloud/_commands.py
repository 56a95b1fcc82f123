"""Remote commands: authorisation, idempotent creation, and the lifecycle of SPEC §2.3.

`request` checks, in this order (issue 4): session → car in the user's garage → role and rights → licence →
privacy → capability → S-PIN → rate limit; then it stores the command (`queued`) with its time to live. The
same request id of the same user gives back the first command instead of a second one, without checking again
(a retry must not spend an S-PIN try or a rate token).

Lifecycle: `queued → delivered → in_progress → succeeded | failed | rejected | timed_out`. A step only goes
forward; final states never change — a late result for a final command is ignored and reported
(`Transition.applied` is False, with a note). Every step is one compare-and-set in the registry, so two cloud
processes handling the same result cannot both apply it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import structlog

from broker.registry import CommandRecord, CommandStep, RateBucket, VehicleRecord
from tcu_sim.protocol import CommandOp, CommandResult, CommandState, ProtocolError, ResultState, command_params

from ._access import AccessControl
from ._accounts import AccountService
from ._context import ServiceContext
from ._errors import InsufficientRights, InvalidRequest, RateLimited, UnsupportedByVehicle
from ._rights import OP_RIGHTS, SPIN_OPS, rights_of
from ._spin import SpinGuard
from ._vehicles import vehicle_capabilities

__all__ = ["CommandService", "CommandView", "NewCommand", "Transition", "take_token"]

log = structlog.get_logger("broker.cloud.commands")

_RANK: Final = {
    CommandState.QUEUED: 0,
    CommandState.DELIVERED: 1,
    CommandState.IN_PROGRESS: 2,
    CommandState.SUCCEEDED: 3,
    CommandState.FAILED: 3,
    CommandState.REJECTED: 3,
    CommandState.TIMED_OUT: 3,
}

_RESULT_STATE: Final = {
    ResultState.ACCEPTED: CommandState.IN_PROGRESS,
    ResultState.SUCCEEDED: CommandState.SUCCEEDED,
    ResultState.FAILED: CommandState.FAILED,
    ResultState.REJECTED: CommandState.REJECTED,
}


def allowed_from(state: CommandState) -> frozenset[CommandState]:
    """The states a command may be in to move to `state`: unfinished and earlier in the lifecycle."""
    return frozenset(s for s, rank in _RANK.items() if not s.is_final and rank < _RANK[state])


def take_token(
    bucket: RateBucket | None, key: str, now: float, *, capacity: float, per_s: float
) -> tuple[RateBucket, float]:
    """Token bucket (pure): the bucket after trying to take one token at `now`, and 0 when taken, else the
    seconds until one is available."""
    tokens = capacity if bucket is None else min(capacity, bucket.tokens + max(0.0, now - bucket.updated_at) * per_s)
    if tokens >= 1.0:
        return RateBucket(key=key, tokens=tokens - 1.0, updated_at=now), 0.0
    return RateBucket(key=key, tokens=tokens, updated_at=now), (1.0 - tokens) / per_s


@dataclass(frozen=True, slots=True)
class NewCommand:
    """The command a request created, or — `created` False — the one an earlier request with the same id did."""

    command: CommandRecord
    created: bool


@dataclass(frozen=True, slots=True)
class Transition:
    """The result of a lifecycle step: the command as it is now, whether the step was applied, and why not."""

    command: CommandRecord | None
    applied: bool
    note: str | None = None


@dataclass(frozen=True, slots=True)
class CommandView:
    """A command and its history, as `command_status` shows it."""

    command: CommandRecord
    history: tuple[CommandStep, ...]

    def as_result(self) -> dict[str, Any]:
        """The `result` of the app's `command_status` response."""
        c = self.command
        return {
            "command_id": c.id, "vin": c.vin, "op": c.op, "state": c.state.value, "reason": c.reason,
            "detail": c.detail, "created_at": c.created_at, "expires_at": c.expires_at,
            "history": [{"state": s.state.value, "at": s.at, "reason": s.reason} for s in self.history],
        }


class CommandService:
    """Creates commands for apps and follows them to a final state."""

    def __init__(self, ctx: ServiceContext, accounts: AccountService, access: AccessControl, spin: SpinGuard) -> None:
        self._ctx = ctx
        self._reg = ctx.registry
        self._accounts = accounts
        self._access = access
        self._spin = spin

    def __repr__(self) -> str:
        return f"CommandService({self._reg!r}, ttl_s={self._ctx.config.command_ttl_s})"

    async def request(
        self,
        token: str | None,
        request_id: str,
        vin: str,
        op: str,
        params: Mapping[str, Any] | None = None,
        spin: str | None = None,
        *,
        client_id: str | None = None,
    ) -> NewCommand:
        """Authorise and store a command an app asked for (see the module docstring for the order of checks).
        The caller signs and publishes `command` when `created`; a duplicate request changes nothing.
        `client_id`, the app client that asked, is stored with the command (its progress is pushed there)."""
        me = await self._accounts.authenticate(token)
        if not isinstance(request_id, str) or not 1 <= len(request_id) <= 128:
            raise InvalidRequest("A request needs an id.")
        earlier = await self._reg.find_command(me.user_id, request_id)
        if earlier is not None:
            return NewCommand(earlier, created=False)
        try:
            command_op = CommandOp(op)
        except ValueError:
            raise InvalidRequest("Unknown command.") from None
        access = await self._access.vehicle_for(me, vin)
        right = OP_RIGHTS.get(command_op)
        if right is None:
            raise InsufficientRights("This command is sent by the cloud only.")
        if right not in rights_of(access.enrolment.role):
            raise InsufficientRights()
        self._access.check_licence(access.context)
        self._access.check_privacy(access.context)
        self._check_capability(command_op, access.vehicle)
        try:
            clean = command_params(command_op, dict(params or {})).model_dump(mode="json")
        except ProtocolError as exc:
            raise InvalidRequest(f"Invalid parameters: {exc.detail}") from None
        if command_op in SPIN_OPS:
            await self._spin.verify(me.user, spin, vin=access.vin)
        await self._take_rate_token(me.user_id)
        now = self._ctx.now()
        record = CommandRecord(
            id=self._ctx.new_id("cmd"), user_id=me.user_id, request_id=request_id, vin=access.vin,
            op=command_op.value, params=clean, state=CommandState.QUEUED, created_at=now,
            expires_at=now + self._ctx.config.command_ttl_s, updated_at=now, client_id=client_id,
        )
        command, created = await self._reg.create_command(record)
        if created:
            await self._ctx.audit(
                "command.requested", user_id=me.user_id, vin=access.vin, command_id=command.id, op=command.op
            )
        return NewCommand(command, created)

    @staticmethod
    def _check_capability(op: CommandOp, vehicle: VehicleRecord) -> None:
        caps = vehicle_capabilities(vehicle)
        if op in (CommandOp.AUX_HEATING_START, CommandOp.AUX_HEATING_STOP) and not caps.aux_heater:
            raise UnsupportedByVehicle("This car has no auxiliary heater.")
        if op in (CommandOp.VENTILATION_START, CommandOp.VENTILATION_STOP) and not caps.ventilation:
            raise UnsupportedByVehicle("This car has no remote ventilation.")

    async def _take_rate_token(self, user_id: str) -> None:
        cfg = self._ctx.config
        now = self._ctx.now()
        wait = 0.0

        def take(bucket: RateBucket | None) -> RateBucket:
            nonlocal wait
            after, wait = take_token(bucket, f"cmd:{user_id}", now, capacity=cfg.rate_capacity,
                                     per_s=cfg.rate_refill_per_s)
            return after

        await self._reg.update_rate_bucket(f"cmd:{user_id}", take)
        if wait > 0:
            raise RateLimited(wait)

    async def status(self, token: str | None, command_id: str) -> CommandView:
        """One of the user's commands, with its history. Another user's command is reported as unknown."""
        me = await self._accounts.authenticate(token)
        command = await self._reg.get_command(command_id) if isinstance(command_id, str) else None
        if command is None or command.user_id != me.user_id:
            raise InvalidRequest("Unknown command.")
        return CommandView(command, tuple(await self._reg.command_history(command.id)))

    def system_command(self, vin: str, op: CommandOp, params: Mapping[str, Any] | None = None) -> CommandRecord:
        """A command the cloud itself sends (e.g. `infotainment.notify` with the primary-user confirmation,
        R8). Not stored: no app follows it; its result is ignored as unknown."""
        clean = command_params(op, dict(params or {})).model_dump(mode="json")
        now = self._ctx.now()
        return CommandRecord(
            id=self._ctx.new_id("sys"), user_id="cloud", request_id="", vin=vin, op=op.value, params=clean,
            state=CommandState.QUEUED, created_at=now, expires_at=now + self._ctx.config.command_ttl_s,
            updated_at=now,
        )

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def transition(
        self, command_id: str, state: CommandState, *, reason: str | None = None, detail: str | None = None
    ) -> Transition:
        """Move a command forward to `state`. Not applied (and reported) when it is unknown, final, or already
        past `state`."""
        now = self._ctx.now()
        moved = await self._reg.transition_command(
            command_id, state, now, allowed_from=allowed_from(state), reason=reason, detail=detail
        )
        if moved is not None:
            log.info("command.state", command_id=command_id, vin=moved.vin, state=state.value, reason=reason)
            if state.is_final:
                await self._ctx.audit(
                    "command.finished", state.value, user_id=moved.user_id, vin=moved.vin, command_id=command_id,
                    reason=reason,
                )
            return Transition(moved, applied=True)
        current = await self._reg.get_command(command_id)
        if current is None:
            note = "unknown command"
        elif current.state.is_final:
            note = f"command is {current.state.value} (final); {state.value} ignored"
        else:
            note = f"command is {current.state.value}; {state.value} would go back"
        log.warning("command.transition_ignored", command_id=command_id, to=state.value, note=note)
        return Transition(current, applied=False, note=note)

    async def mark_delivered(self, command_id: str) -> Transition:
        """The command was handed to the broker for the car."""
        return await self.transition(command_id, CommandState.DELIVERED)

    async def apply_result(self, vin: str, result: CommandResult) -> Transition:
        """Apply a car's verified result (`accepted` → in_progress, then the final state with its reason).
        A result from another car than the command's is ignored."""
        command = await self._reg.get_command(result.command_id)
        if command is not None and command.vin != vin:
            log.warning("command.result_from_other_vin", command_id=result.command_id, vin=vin)
            return Transition(None, applied=False, note="result from another car")
        reason = None if result.reason is None else str(result.reason.value)
        return await self.transition(
            result.command_id, _RESULT_STATE[result.state], reason=reason, detail=result.detail
        )

    async def expire_overdue(self, now: float | None = None) -> list[CommandRecord]:
        """Move every unfinished command past its time to live to `timed_out`; the commands moved."""
        expired = await self._reg.expire_commands(self._ctx.now() if now is None else now)
        for c in expired:
            log.info("command.state", command_id=c.id, vin=c.vin, state=c.state.value)
            await self._ctx.audit("command.finished", c.state.value, user_id=c.user_id, vin=c.vin, command_id=c.id)
        return expired
