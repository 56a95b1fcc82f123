"""raise_open_files_limit: the soft RLIMIT_NOFILE goes up as asked, never past the hard limit, never down."""

from __future__ import annotations

import resource

import pytest

import tcu_sim.bench
from tcu_sim.fleet import raise_open_files_limit


class FakeLimits:
    """RLIMIT_NOFILE of a pretend process (so the test changes nothing of the real one)."""

    def __init__(self, soft: int, hard: int) -> None:
        self.limits = (soft, hard)
        self.set_calls = 0

    def getrlimit(self, which: int) -> tuple[int, int]:
        assert which == resource.RLIMIT_NOFILE
        return self.limits

    def setrlimit(self, which: int, limits: tuple[int, int]) -> None:
        assert which == resource.RLIMIT_NOFILE
        self.set_calls += 1
        self.limits = limits


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeLimits:
    limits = FakeLimits(1024, 4096)
    monkeypatch.setattr(resource, "getrlimit", limits.getrlimit)
    monkeypatch.setattr(resource, "setrlimit", limits.setrlimit)
    return limits


@pytest.mark.parametrize(
    ("wanted", "after"),
    [(None, (4096, 4096)), (2048, (2048, 4096)), (10_000, (4096, 4096))],
)
def test_the_soft_limit_goes_up_to_what_is_wanted_within_the_hard_limit(
    fake: FakeLimits, wanted: int | None, after: tuple[int, int]
) -> None:
    assert raise_open_files_limit(wanted) == after
    assert fake.limits == after


def test_a_soft_limit_already_high_enough_is_left_alone(fake: FakeLimits) -> None:
    assert raise_open_files_limit(512) == (1024, 4096)
    assert fake.set_calls == 0


def test_the_bench_uses_the_same_helper() -> None:
    assert tcu_sim.bench.raise_open_files_limit is raise_open_files_limit
