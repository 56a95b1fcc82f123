"""The harness's pure parts and its public API: seeds, fleet sources, the clock's hooks, descriptions, the
background loop, options, and what `import tcu_sim` offers."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

import tcu_sim
from tcu_sim.testing import (
    DEFAULT_FLEET,
    HarnessSetupError,
    Sandbox,
    SimClock,
    WaitTimeout,
    derive_seed,
    resolve_fleet,
)
from tcu_sim.testing._describe import describe_history, describe_status, status_value
from tcu_sim.testing._loopthread import LoopThread

ROOT = Path(__file__).resolve().parents[2]


def test_derived_seeds_are_stable_and_distinct() -> None:
    assert derive_seed(0, "tests/a.py::test_x") == derive_seed(0, "tests/a.py::test_x")
    seeds = {derive_seed(seed, test) for seed in (0, 1) for test in ("a", "b", "c")}
    assert len(seeds) == 6
    assert all(0 <= s < 2**63 for s in seeds)


def test_fleet_sources(tmp_path: Path) -> None:
    default = resolve_fleet(None, seed=9)
    assert default.seed == 9
    assert [g.name for g in default.groups] == ["leon", "ateca"]
    assert "seed: {seed}" in DEFAULT_FLEET
    text = "name: one\nseed: 1\ndefaults: {home_area: {center: {lat: 1, lon: 1}, radius_km: 1}}\n" + (
        "groups: [{name: born, count: 1, model: born, equipment: media_system}]\n"
    )
    assert resolve_fleet(text).name == "one"
    (tmp_path / "one.yaml").write_text(text, encoding="utf-8")
    assert resolve_fleet("one.yaml", base=tmp_path).name == "one"
    from_dict = resolve_fleet(
        {"name": "d", "seed": 2, "defaults": {"home_area": {"center": {"lat": 1.0, "lon": 1.0}, "radius_km": 1}},
         "groups": [{"name": "x", "count": 1, "model": "leon", "equipment": "media_system"}]}
    )
    assert resolve_fleet(from_dict) is from_dict
    with pytest.raises(HarnessSetupError, match=r"nowhere.yaml: no such fleet file"):
        resolve_fleet("nowhere.yaml", base=tmp_path)
    with pytest.raises(HarnessSetupError, match=r"groups\[0\]\.count"):
        resolve_fleet(text.replace("count: 1", "count: 0"))


async def test_the_clock_runs_its_hooks_after_each_jump() -> None:
    clock = SimClock()
    seen: list[float] = []

    async def hook() -> None:
        seen.append(clock.now())

    remove = clock.after_advance(hook)
    start = clock.now()
    await clock.advance(30)
    assert seen == [start + 30]
    remove()
    await clock.advance(30)
    assert seen == [start + 30]
    assert clock.isoformat() == "2026-01-01T00:01:00Z"
    assert "2026-01-01T00:01:00Z" in repr(clock)


def test_descriptions() -> None:
    status = {
        "locked": False,
        "ignition": "off",
        "moving": False,
        "privacy_mode": "off",
        "doors": {"front_left": {"open": True, "locked": False}, "trunk": {"open": False, "locked": False}},
        "windows": {"rear_left": "open"},
        "aux_heating": {"state": "heating", "remaining_min": 12},
        "battery_12v_v": 12.1,
        "connection": {"online": True},
        "updated_at": 1_767_225_600.0,
    }
    line = describe_status(status)
    assert line.startswith("locked=False (doors open: front_left), ignition=off")
    assert "aux_heating=heating (12 min left)" in line
    assert line.endswith("windows open: rear_left")
    assert describe_status(None) == "no status"
    assert status_value(status, "doors.front_left.open") is True
    with pytest.raises(KeyError):
        status_value(status, "doors.nowhere")

    class Step:
        def __init__(self, state: str, at: float, reason: str | None = None) -> None:
            self.state, self.at, self.reason, self.detail = state, at, reason, None

    history = describe_history([Step("queued", 10.0), Step("failed", 10.5, "door_open")], created_at=10.0)
    assert history == "queued (+0.0 s) → failed: door_open (+0.5 s)"
    assert describe_history([]) == "no history"


async def test_the_background_loop_serves_any_loop() -> None:
    thread = LoopThread("test-loop")
    try:

        async def where() -> asyncio.AbstractEventLoop:
            return asyncio.get_running_loop()

        assert await thread.run(where()) is thread.loop
        assert thread.call(where(), timeout=5) is thread.loop
        assert thread.alive
    finally:
        thread.close()
    assert not thread.alive


def test_wait_failures_are_assertion_errors_of_the_public_module() -> None:
    assert issubclass(WaitTimeout, AssertionError)
    assert WaitTimeout.__module__ == "tcu_sim.testing"


async def test_an_unreachable_external_broker_is_a_setup_error(tmp_path: Path) -> None:
    from tcu_sim.testing import free_ports

    port = free_ports("127.0.0.1", 1)[0]  # nobody listens there
    sandbox = Sandbox(tmp_path, broker=f"mqtt://127.0.0.1:{port}", timeout=0.5)
    with pytest.raises(HarnessSetupError, match=rf"the cloud could not connect to mqtt://127.0.0.1:{port}"):
        await sandbox.__aenter__()
    with pytest.raises(HarnessSetupError, match="mqtts:// broker needs the fleet PKI"):
        await Sandbox(tmp_path, broker="mqtts://127.0.0.1:1").__aenter__()


def test_the_public_api() -> None:
    for name in tcu_sim.__all__:
        assert getattr(tcu_sim, name) is not None, name
    assert tcu_sim.Sandbox is Sandbox
    assert set(tcu_sim.__all__) <= set(dir(tcu_sim))
    assert {"Clock", "SystemClock", "VirtualClock", "SkewedClock", "__version__"} <= set(tcu_sim.__all__)
    with pytest.raises(AttributeError):
        _ = tcu_sim.NoSuchThing
    assert (Path(tcu_sim.__file__).parent / "py.typed").is_file()


def test_import_tcu_sim_stays_cheap() -> None:
    code = "import sys, tcu_sim; print(sorted(m for m in sys.modules if m.startswith(('broker', 'aiomqtt'))))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout.strip() == "[]"


def test_without_pytest_asyncio_other_tests_still_run(tmp_path: Path) -> None:
    # The plugin loads in every pytest run of the environment: without pytest-asyncio it must not break them.
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "pytest_asyncio.py").write_text('raise ImportError("pytest-asyncio is not installed")\n')
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_plain.py").write_text("def test_plain():\n    pass\n\n\ndef test_car(car):\n    pass\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:asyncio", "-p", "no:cacheprovider", "-q", "-p", "no:xdist"],
        cwd=project,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(shadow), os.environ.get("PYTHONPATH")]))},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "1 passed, 1 error" in done.stdout, done.stdout + done.stderr
    assert "the fleet fixture needs pytest-asyncio (pip install pytest-asyncio)" in done.stdout
