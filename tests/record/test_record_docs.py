"""The record/replay commands shown in README.md and docs/record-replay.md exist with every option they use."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from tcu_sim.cli import cli

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", REPO / "docs" / "record-replay.md"]


def _commands(path: Path) -> list[list[str]]:
    """Every `tcu-sim record|replay|up ... --record` line of the file's sh code blocks, as arguments."""
    text = path.read_text(encoding="utf-8")
    out = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            if not re.match(r"tcu-sim (record|replay|up .*--record)", line):
                continue
            words = shlex.split(line.split("#", 1)[0])
            if words[:2] in (["tcu-sim", "record"], ["tcu-sim", "replay"]) or "--record" in words:
                out.append(words[1:])
    return out


def _command(words: list[str]) -> tuple[click.Command, list[str]]:
    group = cli.commands[words[0]]
    rest = words[1:]
    if isinstance(group, click.Group):
        name = rest[0] if rest and rest[0] in group.commands else "start"
        return group.commands[name], rest[1:] if name == rest[0] else rest
    return group, rest


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_documented_record_and_replay_commands_parse(path: Path) -> None:
    commands = _commands(path)
    assert any(w[0] == "replay" for w in commands)
    assert any(w[0] == "record" for w in commands)
    for words in commands:
        command, args = _command(words)
        options = {opt for param in command.params for opt in getattr(param, "opts", [])}
        used = {arg for arg in args if arg.startswith("--")}
        assert used <= options, f"{path.name}: {' '.join(words)}: unknown {used - options}"
        ctx = command.make_context(command.name, list(args), resilient_parsing=True)
        assert ctx.params is not None
