"""Reading example lines as commands: which `tcu-sim` command a line calls and with which options."""

from __future__ import annotations

import re

import click

from tcu_sim.cli import cli
from tcu_sim.cli._examples import walk

__all__ = ["COMMANDS", "call", "options_of", "resolve"]

COMMANDS = {" ".join(path): command for path, command in walk(cli)}


def call(line: str) -> list[str] | None:
    """The words after `tcu-sim` (or `.venv/bin/tcu-sim`) in a shell line, comment cut (None: no tcu-sim call)."""
    words = [w.strip("\"'") for w in line.split("  #")[0].split("|")[-1].split()]
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # `VAR=value tcu-sim ...`
        words = words[1:]
    return words[1:] if words and words[0] in ("tcu-sim", ".venv/bin/tcu-sim") else None


def resolve(words: list[str]) -> tuple[click.Command, list[str]]:
    """The command `words` call, as click parses them (groups with their own argument rules included), and the
    options they give (up to a `--`)."""
    options = [w.split("=", 1)[0] for w in words[: words.index("--") if "--" in words else None] if w.startswith("-")]
    ctx = cli.make_context("tcu-sim", list(words), resilient_parsing=True)
    command: click.Command = cli
    while isinstance(command, click.Group):
        # click 8.2+ keeps the subcommand's name apart (`protected_args` is deprecated, `_protected_args` is it).
        args = [*getattr(ctx, "_protected_args", []), *ctx.args]
        if not args:
            break
        name, sub, rest = command.resolve_command(ctx, args)
        if sub is None or name is None:
            break
        ctx = sub.make_context(name, rest, parent=ctx, resilient_parsing=True)
        command = sub
    return command, options


def options_of(words: list[str]) -> set[str]:
    """Every option a call may give: those of the command and of each group on its way."""
    known = {"--help", "-h"}
    command, _ = resolve(words)
    chain = [path for path, c in COMMANDS.items() if c is command]
    assert chain, f"{words}: no command"
    parts = chain[0].split()
    for i in range(len(parts) + 1):
        group = COMMANDS[" ".join(parts[:i])]
        known |= {o for p in group.params for o in (*p.opts, *p.secondary_opts)}
    return known
