"""Car statuses verified in worker processes beside the event loop (`HandlerConfig.verify_processes`).

Verifying a signed status — the Ed25519 signature, the claims, the body against its model — is most of the CPU a
status costs the cloud, and CPython runs one thread at a time: on the event loop's thread it caps one cloud
process at the rate one core verifies. With `verify_processes` > 0 the handler hands each batch's statuses to that
many worker processes (`concurrent.futures.ProcessPoolExecutor`) and keeps the loop for MQTT, the registry and the
acknowledgements. A worker does exactly what the loop would: `Verifier.verify(token, typ=STATUS, issuer=vin,
kid=vin)` with the fleet's pinned keys, then `parse_body(StatusSnapshot, ...)`, in that order, and sends back the
fields the registry needs (or the refusal). The time it checks `exp`/`iat` against is the handler clock's, taken
when the batch is sent (a virtual clock works too).

Events and results (few, and applied with their parsed models) are still verified on the loop.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import structlog

from tcu_sim.protocol import (
    DEFAULT_ALGORITHMS,
    KeySet,
    MessageType,
    ProtocolError,
    RefusalReason,
    StatusSnapshot,
    Verifier,
    parse_body,
)

__all__ = ["StatusCheck", "VerifyPool"]

log = structlog.get_logger("broker.handler.verify")


@dataclass(frozen=True, slots=True)
class StatusCheck:
    """A worker's verdict on one status: the fields to store, or why it is refused."""

    seq: int = 0
    updated_at: float = 0.0
    privacy_mode: str = ""
    status_json: str = ""
    refused: RefusalReason | None = None
    detail: str = ""


class _FixedClock:
    """The handler's time, as it was when the batch was sent."""

    def __init__(self) -> None:
        self.at = 0.0

    def now(self) -> float:
        return self.at

    def monotonic(self) -> float:
        return self.at

    async def sleep(self, seconds: float) -> None:  # pragma: no cover - a verifier never sleeps
        raise NotImplementedError


_verifier: Verifier | None = None
_clock = _FixedClock()


def _start_worker(
    jwks: Mapping[str, Any], audience: str, skew_s: float, max_bytes: int, algorithms: frozenset[str]
) -> None:
    global _verifier  # one verifier per worker process, made once at its start
    _verifier = Verifier(
        KeySet.from_jwks(jwks),
        audience=audience,
        clock=_clock,
        skew_s=skew_s,
        max_bytes=max_bytes,
        algorithms=algorithms,
    )


def _check_statuses(items: Sequence[tuple[str, bytes]], now: float) -> list[StatusCheck]:
    """In a worker: verify and parse each (vin, token) exactly as `CarMessages` does on the loop."""
    verifier = _verifier
    if verifier is None:  # pragma: no cover - the pool's initializer ran first
        raise RuntimeError("verify worker not started")
    _clock.at = now
    out: list[StatusCheck] = []
    for vin, token in items:
        try:
            verified = verifier.verify(token, typ=MessageType.STATUS, issuer=vin, kid=vin)
            status = parse_body(StatusSnapshot, verified.body)
        except ProtocolError as exc:
            out.append(StatusCheck(refused=exc.reason, detail=exc.detail))
            continue
        out.append(
            StatusCheck(verified.seq, status.updated_at, status.privacy_mode.value, status.model_dump_json())
        )
    return out


class VerifyPool:
    """Worker processes verifying car statuses (see the module docstring). An async context manager."""

    def __init__(
        self,
        processes: int,
        keys: KeySet,
        *,
        audience: str,
        skew_s: float,
        max_bytes: int,
        algorithms: frozenset[str] = DEFAULT_ALGORITHMS,
    ) -> None:
        self.processes = processes
        self._initargs = (keys.to_jwks(), audience, skew_s, max_bytes, algorithms)
        self._executor: ProcessPoolExecutor | None = None

    def __repr__(self) -> str:
        state = "running" if self._executor is not None else "stopped"
        return f"VerifyPool({self.processes} processes, {state})"

    def worker_pids(self) -> list[int]:
        """The process ids of the workers (for measurements)."""
        executor = self._executor
        processes = getattr(executor, "_processes", None) or {}  # the executor's own map of its workers
        return sorted(int(pid) for pid in processes)

    @property
    def running(self) -> bool:
        """True while the workers can take work."""
        return self._executor is not None

    async def __aenter__(self) -> VerifyPool:
        # forkserver: never fork the running event loop's process (its threads and locks) itself.
        context = multiprocessing.get_context("forkserver")
        self._executor = ProcessPoolExecutor(
            self.processes, mp_context=context, initializer=_start_worker, initargs=self._initargs
        )
        # Start them now, not on the first batch (a worker takes a second or so to import what it needs).
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self._executor, _check_statuses, [], 0.0)
                               for _ in range(self.processes)))
        return self

    async def __aexit__(self, *exc: object) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.shield(asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True))

    async def check(self, items: Sequence[tuple[str, bytes]], now: float) -> list[StatusCheck] | None:
        """The verdicts on `items` (vin, token), in order; None when the pool is not running or broke (the
        caller verifies on the loop instead)."""
        executor = self._executor
        if executor is None or not items:
            return None if executor is None else []
        loop = asyncio.get_running_loop()
        size = -(-len(items) // self.processes)
        chunks = [items[i : i + size] for i in range(0, len(items), size)]
        try:
            parts = await asyncio.gather(
                *(loop.run_in_executor(executor, _check_statuses, chunk, now) for chunk in chunks)
            )
        except BrokenProcessPool as exc:
            log.error("verify.pool_broken", error=str(exc))
            self._executor = None
            executor.shutdown(wait=False, cancel_futures=True)
            return None
        return [check for part in parts for check in part]
