"""One running stack per state directory (SPEC §7): `StateLock` refuses a second holder and names the first,
takes over what a dead process left, lets the two halves of a stack (fleet and cloud) share a directory; and
`endpoints.json` says where the running stack listens."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tcu_sim.fleet import Endpoints, StateBusy, StateLock, read_endpoints, remove_endpoints, write_endpoints


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    return int(proc.stdout)


def test_a_second_holder_is_refused_with_the_first_ones_pid_and_kind(tmp_path: Path) -> None:
    with StateLock(tmp_path, holder="up") as first:
        assert first.held
        record = json.loads((tmp_path / ".lock").read_text())
        with pytest.raises(StateBusy) as refused:
            StateLock(tmp_path, holder="up").acquire()
        assert (refused.value.pid, refused.value.holder) == (os.getpid(), "up")
        assert f"in use by pid {os.getpid()} (tcu-sim up)" in str(refused.value)
        assert "--state DIR" in str(refused.value)
        assert json.loads((tmp_path / ".lock").read_text()) == record  # the refusal changed nothing
    assert not first.held
    with StateLock(tmp_path, holder="up"):  # free again once released
        pass


def test_a_lock_file_left_by_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    dead = _dead_pid()
    (tmp_path / ".lock").write_text(json.dumps({"pid": dead, "holder": "up", "since": 0}) + "\n")
    with StateLock(tmp_path, holder="up"):
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()


def test_a_fleet_and_its_cloud_share_a_directory_but_never_with_up(tmp_path: Path) -> None:
    fleet_lock = StateLock(tmp_path, holder="fleet run", role="fleet")
    with fleet_lock, StateLock(tmp_path, holder="cloud run", role="cloud-cloud"):
        with StateLock(tmp_path, holder="fleet run", role="fleet-2of4"):  # another shard
            pass
        with pytest.raises(StateBusy) as same_fleet:
            StateLock(tmp_path, holder="fleet run", role="fleet").acquire()
        assert same_fleet.value.holder == "fleet run"
        with pytest.raises(StateBusy) as up:
            StateLock(tmp_path, holder="up").acquire()
        assert up.value.pid == os.getpid()
        assert up.value.holder in ("fleet run", "cloud run")
    with StateLock(tmp_path, holder="up"), pytest.raises(StateBusy) as fleet:
        StateLock(tmp_path, holder="fleet run", role="fleet").acquire()
    assert fleet.value.holder == "up"


def test_the_endpoints_file_round_trips_and_knows_a_dead_writer(tmp_path: Path) -> None:
    assert read_endpoints(tmp_path) is None
    mine = Endpoints(pid=os.getpid(), holder="up", device="mqtts://127.0.0.1:40001", app="mqtts://127.0.0.1:40002",
                     device_port=40001, app_port=40002)
    write_endpoints(tmp_path, mine)
    assert read_endpoints(tmp_path) == mine
    assert mine.alive
    remove_endpoints(tmp_path, pid=os.getpid() + 1)  # not the writer: kept
    assert read_endpoints(tmp_path) == mine
    remove_endpoints(tmp_path, pid=os.getpid())
    assert read_endpoints(tmp_path) is None
    gone = Endpoints(pid=_dead_pid(), holder="up", device="mqtts://127.0.0.1:40001")
    write_endpoints(tmp_path, gone)
    found = read_endpoints(tmp_path)
    assert found is not None
    assert not found.alive
    (tmp_path / "endpoints.json").write_text("{not json")
    assert read_endpoints(tmp_path) is None
