"""The anti-replay window (pure): every seq is accepted at most once, a seq that arrives late within the window is
accepted, one older than the window is refused — checked against a model that remembers every seq."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from broker.registry import SEQ_WINDOW, SeqMark


class _Model:
    """Remembers every accepted seq; what the window must agree with."""

    def __init__(self) -> None:
        self.seen: set[int] = set()

    def accept(self, seq: int) -> bool:
        high = max(self.seen, default=0)
        if seq in self.seen or seq <= high - SEQ_WINDOW:
            return False
        self.seen.add(seq)
        return True


# Mostly nearby seqs (duplicates, mild reordering), now and then a jump.
_seqs = st.lists(st.one_of(st.integers(0, 80), st.integers(0, 400)), max_size=200)


@given(_seqs)
def test_the_window_accepts_exactly_what_a_full_memory_would(seqs: list[int]) -> None:
    mark, model = SeqMark(), _Model()
    for seq in seqs:
        after = mark.accept(seq)
        assert (after is not None) == model.accept(seq), (seq, mark)
        mark = after or mark
        assert mark.high == max(model.seen, default=0)


@given(_seqs)
def test_nothing_is_accepted_twice(seqs: list[int]) -> None:
    mark, accepted = SeqMark(), []
    for seq in seqs + seqs:
        after = mark.accept(seq)
        if after is not None:
            accepted.append(seq)
            mark = after
    assert len(accepted) == len(set(accepted))


def test_late_but_within_the_window_is_accepted_too_old_is_not() -> None:
    mark = SeqMark().accept(100)
    assert mark is not None
    late = mark.accept(100 - SEQ_WINDOW + 1)
    assert late is not None
    assert late.accept(100 - SEQ_WINDOW + 1) is None  # now a duplicate
    assert mark.accept(100 - SEQ_WINDOW) is None  # older than the window: cannot be told from a replay
    assert mark.accept(100) is None


def test_a_released_seq_is_accepted_again_and_only_that_one() -> None:
    mark = SeqMark()
    for seq in (1, 2, 3):
        after = mark.accept(seq)
        assert after is not None
        mark = after
    released = mark.release(2)
    assert released.accept(1) is None
    again = released.accept(2)
    assert again == mark
    assert mark.release(3).accept(3) == mark  # the highest too
    assert mark.release(500) == mark
    assert mark.release(3 - SEQ_WINDOW) == mark


@given(st.integers(0, 2**62), st.integers(0, 2**SEQ_WINDOW - 1))
def test_the_stored_form_is_a_signed_64_bit_integer_and_round_trips(high: int, seen: int) -> None:
    mark = SeqMark(high, seen)
    stored = mark.to_stored()
    assert -(2**63) <= stored < 2**63
    assert SeqMark.from_stored(high, stored) == mark


def test_marks_kept_before_the_window_existed_count_everything_below_as_seen() -> None:
    legacy = SeqMark.from_stored(10, -1)  # the migration's default
    assert legacy.accept(9) is None
    assert legacy.accept(10) is None
    assert legacy.accept(11) is not None
