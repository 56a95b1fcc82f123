"""`SeqStore.reserve()`: the next block written ahead (in a thread), so `next_seq()` need not touch the disk."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tcu_sim.transport import SeqStore


async def test_reserve_in_a_thread_then_next_seq_does_not_write(tmp_path: Path) -> None:
    path = tmp_path / "car" / "seq.json"
    store = SeqStore(path, block=10)
    assert store.needs_reserve
    await asyncio.to_thread(store.reserve)
    assert not store.needs_reserve
    assert json.loads(path.read_text()) == {"reserved": 10, "last_command_seq": 0}
    path.unlink()  # any write from here on would bring the file back
    assert [store.next_seq() for _ in range(10)] == list(range(1, 11))
    assert not path.exists()
    assert store.needs_reserve
    assert store.next_seq() == 11  # the block is used up: the next one is written now
    assert json.loads(path.read_text()) == {"reserved": 20, "last_command_seq": 0}


def test_a_restarted_car_continues_above_the_reserved_block(tmp_path: Path) -> None:
    path = tmp_path / "seq.json"
    store = SeqStore(path, block=10)
    store.reserve()
    store.reserve()  # nothing to do: the block is not used yet
    assert store.next_seq() == 1
    store.accept_command(7)
    again = SeqStore(path, block=10)
    assert again.next_seq() == 11  # numbers may skip, never repeat
    assert again.last_command_seq == 7
