"""The per-user event log behind `/api/v1/events`: ids, resume, bounds, gaps, waiting."""

from __future__ import annotations

import asyncio

from broker.http import UserEventLog
from tcu_sim.protocol import PushEvent, PushEventType


def _event(n: int) -> PushEvent:
    return PushEvent(type=PushEventType.MAIL, at=float(n), data={"subject": f"mail {n}"})


def test_each_user_gets_their_own_events_after_an_id() -> None:
    log = UserEventLog()
    log.append("alice", _event(1))
    log.append("bob", _event(2))
    log.append("alice", _event(3))
    newer, gap = log.after("alice", 0)
    assert [e.id for e in newer] == [1, 3]
    assert not gap
    assert [e.id for e in log.after("alice", 1)[0]] == [3]
    assert [e.id for e in log.after("bob", 0)[0]] == [2]
    assert log.after("carol", 0) == ([], False)


def test_a_full_log_drops_the_oldest_and_a_resume_from_before_it_is_told() -> None:
    log = UserEventLog(per_user=2)
    for n in range(1, 5):
        log.append("alice", _event(n))
    newer, gap = log.after("alice", 1)
    assert [e.id for e in newer] == [3, 4]
    assert gap
    assert log.after("alice", 3)[1] is False  # nothing after 3 was lost
    assert log.dropped == 2


def test_the_least_recent_user_is_forgotten_beyond_the_bound() -> None:
    log = UserEventLog(users=2)
    log.append("alice", _event(1))
    log.append("bob", _event(2))
    log.append("carol", _event(3))
    assert log.after("alice", 0) == ([], False)
    assert log.dropped == 1
    assert "users=2" in repr(log)


async def test_wait_returns_the_next_event_or_nothing_after_the_timeout() -> None:
    log = UserEventLog()
    assert await log.wait("alice", 0, timeout=0.01) == []
    waiting = asyncio.create_task(log.wait("alice", 0, timeout=5))
    log.append("alice", _event(1))
    log.append("bob", _event(2))
    assert [e.id for e in await waiting] == [1]
    assert [e.id for e in await log.wait("bob", 0, timeout=5)] == [2]
