"""The CLI reviewed as a user would: every verb's `--help` shows an example of itself, every example names a real
command with options it has, and shell completion answers."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from cli_kit import COMMANDS, call, options_of, resolve
from click.testing import CliRunner

from tcu_sim.cli import cli
from tcu_sim.cli._examples import EXAMPLES


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=lambda p: p or "tcu-sim")
def test_every_verb_has_an_example_in_its_help(path: str) -> None:
    result = CliRunner().invoke(cli, [*path.split(), "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    _, _, examples = result.output.partition("Examples:")
    paths = {id(command): name for name, command in COMMANDS.items()}
    called = [paths[id(resolve(words)[0])] for line in examples.splitlines() if (words := call(line)) is not None]
    own = [p for p in called if p == path or p.startswith(f"{path} " if path else "")]  # a group: any of its verbs
    assert own, f"`tcu-sim {path} --help` shows no example of itself:\n{result.output}"


@pytest.mark.parametrize("path", sorted(EXAMPLES), ids=lambda p: p or "tcu-sim")
def test_every_example_calls_a_real_command_with_real_options(path: str) -> None:
    assert path in COMMANDS, f"examples for a command that does not exist: {path!r}"
    for line in EXAMPLES[path]:
        words = call(line)
        if words is None:
            continue  # e.g. the mosquitto line after `broker config`
        _, options = resolve(words)
        unknown = [o for o in options if o not in options_of(words)]
        assert not unknown, f"{line!r}: no such option(s) {unknown}"


def test_shell_completion_is_click_s_and_answers() -> None:
    env = {**os.environ, "_TCU_SIM_COMPLETE": "bash_complete", "COMP_WORDS": "tcu-sim app lo", "COMP_CWORD": "2"}
    program = "import sys; sys.argv[0] = 'tcu-sim'; from tcu_sim.cli import main; main()"  # as the script is named
    done = subprocess.run([sys.executable, "-c", program], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert {"plain,lock", "plain,login", "plain,logout"} <= set(done.stdout.splitlines())
