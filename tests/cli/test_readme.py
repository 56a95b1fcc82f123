"""The README followed as a newcomer would: every `tcu-sim` line it shows calls a command and options that exist,
all of them the same way (`tcu-sim` after `. .venv/bin/activate`), the lines that need no running stack are run,
its plugin example passes without a warning, and the package metadata installs without a deprecation."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from cli_kit import COMMANDS, call, options_of, resolve

from tcu_sim.testing.plugin import require_mosquitto

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```$", re.DOTALL | re.MULTILINE)
INDENTED = re.compile(r"^(?: {4}\S.*\n)+", re.MULTILINE)
TCU_SIM = [sys.executable, "-c", "from tcu_sim.cli import main; main()"]


def shell_lines() -> list[str]:
    """Every line of the README's shell examples (```sh blocks and indented blocks) that calls tcu-sim."""
    texts = [text for language, text in BLOCK.findall(README) if language in ("sh", "")]
    texts += [block for block in INDENTED.findall(README)]
    lines = [part.strip() for text in texts for line in text.splitlines() for part in line.split(" ; ")]
    return [line for line in lines if call(line) is not None]


def test_the_readme_has_tcu_sim_lines() -> None:
    assert len(shell_lines()) >= 40


@pytest.mark.parametrize("line", shell_lines())
def test_every_readme_line_calls_a_real_command_with_real_options(line: str) -> None:
    words = call(line)
    assert words is not None
    command, options = resolve(words)
    assert command in COMMANDS.values()
    assert command is not COMMANDS[""], f"{line!r} names no tcu-sim command"
    unknown = [o for o in options if o not in options_of(words)]
    assert not unknown, f"{line!r}: no such option(s) {unknown}"


def test_every_readme_line_calls_tcu_sim_the_same_way() -> None:
    # `make run` installs tcu-sim into .venv only: the README says to activate it, and then calls it plainly.
    assert ". .venv/bin/activate" in README
    odd = [line for line in shell_lines() if not line.startswith("tcu-sim ")]
    assert not odd, odd


@pytest.mark.parametrize(
    "line",
    [line for line in shell_lines() if line.startswith(("tcu-sim fleet validate", "tcu-sim fleet schema",
                                                         "tcu-sim asyncapi", "tcu-sim scenario validate"))],
)
def test_the_readme_lines_that_need_no_stack_run(line: str, tmp_path: Path) -> None:
    words = call(line)
    assert words is not None
    written: Path | None = None
    if "-o" in words:  # write into tmp_path and compare with the file the README names
        at = words.index("-o") + 1
        written, words[at] = ROOT / words[at], str(tmp_path / Path(words[at]).name)
    done = subprocess.run([*TCU_SIM, *words], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    if written is not None:
        assert (tmp_path / written.name).read_text() == written.read_text()


def _plugin_example() -> dict[str, str]:
    blocks = {text.partition("\n")[0].strip("# ").strip(): text.partition("\n")[2]
              for language, text in BLOCK.findall(README) if language in ("ini", "python")}
    return {name: text for name, text in blocks.items() if name in ("pytest.ini", "test_remote_lock.py")}


def test_the_readme_lists_every_fixture_of_the_plugin() -> None:
    from tcu_sim.testing import plugin

    listed = set(re.findall(r"`(\w+)`", README.partition("Fixtures:")[2].partition("Options")[0]))
    public = {name for name in plugin.__all__ if not name[0].isupper() and name not in (
        "require_mosquitto", "tcu_settings_of", "async_fixture")}
    fixtures = {name for name in public if hasattr(getattr(plugin, name), "_fixture_function_marker")
                or "fixture" in type(getattr(plugin, name)).__name__.lower()}
    assert {"tcu_sandbox", "cloud", "car", "app_user", "faults", "clock"} <= listed
    internal = {"tcu_settings", "tcu_seed", "tcu_clock", "tcu_cloud_config", "tcu_fleet_config", "mqtt_pki",
                "mosquitto_factory", "unique_topic", "mosquitto", "amqtt_broker"}  # tcu-sim's own tests' fixtures
    assert fixtures <= listed | internal


def test_the_readme_plugin_example_passes_without_a_warning(pytester: pytest.Pytester) -> None:
    require_mosquitto()
    files = _plugin_example()
    assert set(files) == {"pytest.ini", "test_remote_lock.py"}
    for name, text in files.items():
        (pytester.path / name).write_text(text, encoding="utf-8")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--timeout", "60", timeout=150)
    result.assert_outcomes(passed=1, warnings=0)
    assert "PytestDeprecationWarning" not in result.stdout.str()


def test_the_package_licence_is_an_spdx_expression() -> None:
    # A `license = {text = ...}` table makes setuptools (77+) print a deprecation warning on every install.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["license"] == "Apache-2.0"
    assert any(req.startswith("setuptools>=77") for req in project["build-system"]["requires"])
