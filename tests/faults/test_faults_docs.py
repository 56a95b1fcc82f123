"""Examples in docs/faults.md are run as tests: YAML loads as a scenario file (or as steps of one), JSON parses
as a fault, every `tcu-sim` line parses against the real command line, Python compiles."""

from __future__ import annotations

import json
import re
import shlex
import textwrap
import warnings
from pathlib import Path

import click
import pytest

from tcu_sim.cli import cli
from tcu_sim.faults import parse_fault
from tcu_sim.scenario import parse_scenario

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "faults.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.DOTALL | re.MULTILINE)
# The cars and users the step snippets of the page talk about.
BASE = """
name: docs
seed: 1
defaults:
  home_area: {center: {lat: 41.39, lon: 2.17}, radius_km: 1}
groups:
  - {name: leon, count: 3, model: leon, equipment: media_system}
  - {name: rural, count: 2, model: ateca, equipment: navigation}
  - {name: town, count: 2, model: leon, equipment: media_system}
  - {name: city, count: 3, model: formentor, equipment: media_system}
  - {name: commuters, count: 2, model: leon, equipment: media_system}
"""


def blocks(language: str) -> list[str]:
    found = [text for lang, text in BLOCK.findall(DOC.read_text(encoding="utf-8")) if lang == language]
    assert found, f"docs/faults.md has no {language} example"
    return found


@pytest.mark.parametrize("text", blocks("yaml"), ids=lambda t: t.splitlines()[0][:40])
def test_yaml_examples_load(text: str) -> None:
    if text.startswith("name:"):
        scenario = parse_scenario(text, source="docs/faults.md")
    else:
        scenario = parse_scenario(BASE + "scenario:\n" + textwrap.indent(text, "  "), source="docs/faults.md")
    assert scenario.plan or "zones" not in text


@pytest.mark.parametrize("text", blocks("json"))
def test_json_examples_are_faults(text: str) -> None:
    parse_fault(json.loads(text))


def _commands() -> list[list[str]]:
    lines = [line.strip() for text in blocks("console") for line in text.splitlines()]
    return [shlex.split(line)[1:] for line in lines if line.startswith("tcu-sim ")]


def _parse(command: click.Command, name: str, args: list[str], parent: click.Context | None = None) -> None:
    """Parse `args` down to the leaf command, checking every option and argument, without running anything."""
    ctx = command.make_context(name, args, parent=parent)
    if isinstance(command, click.Group):
        with warnings.catch_warnings():  # Click 8.2 deprecates protected_args; 9.0 will keep everything in args
            warnings.simplefilter("ignore", DeprecationWarning)
            pending = [*ctx.protected_args, *ctx.args]
        sub_name, sub, rest = command.resolve_command(ctx, pending)
        assert sub is not None
        assert sub_name is not None
        _parse(sub, sub_name, rest, ctx)


@pytest.mark.parametrize("args", _commands(), ids=" ".join)
def test_command_line_examples_parse(args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # the examples name files relative to the repository
    _parse(cli, "tcu-sim", args)


def test_python_examples_compile() -> None:
    for text in blocks("python"):
        # The examples run inside a coroutine (they `await`); compiling checks the syntax and the names' shape.
        compile("async def example():\n" + textwrap.indent(text, "    "), "docs/faults.md", "exec")
