"""The fleet package's exceptions: one root, subclasses grouped by what the caller does about them."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ConfigIssue", "FleetConfigError", "FleetError", "ShardError", "StateDirError"]


class FleetError(Exception):
    """Root of every error raised by `tcu_sim.fleet`."""


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a fleet file: where it is (`groups[1].count`, line 12) and what is wrong."""

    path: str
    problem: str
    line: int | None = None
    column: int | None = None

    def where(self, file: str) -> str:
        """`file:line:column: path` — the prefix of this issue's line in an error message."""
        position = file
        if self.line is not None:
            position += f":{self.line}"
            if self.column is not None:
                position += f":{self.column}"
        return f"{position}: {self.path}" if self.path else position

    def format(self, file: str) -> str:
        """`file:line:column: path: problem`, the form editors and CI logs turn into a link."""
        return f"{self.where(file)}: {self.problem}"


class FleetConfigError(FleetError):
    """A fleet file that cannot be used. `str()` names file, path inside it and problem, one line per problem.

    Nothing starts on such a file: loading raises this before any car or key exists.
    """

    def __init__(self, file: str, issues: list[ConfigIssue]) -> None:
        if not issues:
            issues = [ConfigIssue("", "invalid fleet file")]
        self.file = file
        self.issues = tuple(issues)
        lines = [issue.format(file) for issue in self.issues]
        if len(lines) > 1:
            lines.insert(0, f"{file}: {len(lines)} problems")
        super().__init__("\n".join(lines))


class ShardError(FleetError, ValueError):
    """A `--shard i/n` that is not one: malformed, `n < 1`, or `i` outside `1..n`."""


class StateDirError(FleetError):
    """A provisioned state directory that is missing something or holds something unreadable."""
