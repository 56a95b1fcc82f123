"""Reading a fleet file: YAML → checked `FleetConfig`, or a `FleetConfigError` (file, line, path, problem).

PyYAML gives positions only on its node tree, so the file is composed to nodes first (positions of every key
and value, duplicate keys), then constructed to plain data and validated. Each pydantic error's `loc`
becomes a path such as `groups[1].count` and is looked up in the node positions for its line.
"""

from __future__ import annotations

import difflib
import json
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from tcu_sim.fleet._config import FleetConfig
from tcu_sim.fleet._errors import ConfigIssue, FleetConfigError

__all__ = ["fleet_schema", "fleet_schema_json", "load_fleet", "parse_fleet"]

Loc = tuple[str | int, ...]
_SECRET_KEYS = frozenset({"password", "spin"})
_MAX_FILE_BYTES = 16 * 1024 * 1024


class _Loader(yaml.SafeLoader):
    """SafeLoader that leaves timestamps as text: pydantic parses dates and reports a bad one at its path."""


def _timestamp_as_text(loader: yaml.SafeLoader, node: yaml.Node) -> str:
    value = loader.construct_scalar(node)  # type: ignore[arg-type]  # timestamps are always scalar nodes
    return str(value)


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_as_text)


def load_fleet(path: str | Path) -> FleetConfig:
    """Load and validate a fleet file; `FleetConfigError` (file, path inside it, problem) on any fault."""
    file = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise FleetConfigError(file, [ConfigIssue("", f"cannot read the file: {exc.strerror or exc}")]) from None
    if len(data) > _MAX_FILE_BYTES:
        raise FleetConfigError(file, [ConfigIssue("", f"file is larger than {_MAX_FILE_BYTES} bytes")])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FleetConfigError(file, [ConfigIssue("", f"not UTF-8 text (byte {exc.start})")]) from None
    return parse_fleet(text, source=file)


def parse_fleet(text: str, *, source: str = "<fleet>") -> FleetConfig:
    """Validate fleet YAML given as text; `source` names it in errors."""
    marks: dict[Loc, tuple[int, int]] = {}
    key_marks: dict[Loc, tuple[int, int]] = {}
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        raise FleetConfigError(source, [_yaml_issue(exc)]) from None
    except yaml.YAMLError as exc:
        raise FleetConfigError(source, [ConfigIssue("", f"YAML error: {exc}")]) from None
    if node is None:
        raise FleetConfigError(
            source, [ConfigIssue("", "the file is empty; a fleet needs at least name, seed, groups")]
        )
    duplicates: list[ConfigIssue] = []
    _index(node, (), marks, key_marks, duplicates)
    if duplicates:
        raise FleetConfigError(source, duplicates)
    try:
        data = _Loader(text).construct_document(node)
    except yaml.MarkedYAMLError as exc:
        raise FleetConfigError(source, [_yaml_issue(exc)]) from None
    except (yaml.YAMLError, ValueError, TypeError) as exc:  # a constructor choking on a scalar it recognised
        raise FleetConfigError(source, [ConfigIssue("", f"YAML error: {exc}")]) from None
    if not isinstance(data, Mapping):
        line, column = marks.get((), (1, 1))
        problem = f"the top level must be a mapping (name: ..., seed: ..., groups: ...), not {_kind(data)}"
        raise FleetConfigError(source, [ConfigIssue("", problem, line, column)])
    try:
        return FleetConfig.model_validate(data)
    except ValidationError as exc:
        issues = [
            _issue(one, marks, key_marks) for error in exc.errors() for one in _each_problem(error)
        ]
        raise FleetConfigError(source, issues) from None


def fleet_schema() -> dict[str, Any]:
    """The JSON Schema of the fleet file format (what `tcu-sim fleet schema` prints)."""
    schema = FleetConfig.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://tcu-sim.test/fleet.schema.json",
        "title": "tcu-sim fleet file",
        **{key: value for key, value in schema.items() if key != "title"},
    }


def fleet_schema_json() -> str:
    """`fleet_schema()` as the exact text of `fleet_configs/fleet.schema.json`."""
    return json.dumps(fleet_schema(), indent=2, ensure_ascii=False) + "\n"


def _yaml_issue(exc: yaml.MarkedYAMLError) -> ConfigIssue:
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or "invalid YAML"
    if exc.context:
        problem = f"{exc.context}, {problem}"
    return ConfigIssue(
        "",
        f"YAML syntax error: {problem}",
        mark.line + 1 if mark else None,
        mark.column + 1 if mark else None,
    )


def _index(
    node: yaml.Node,
    loc: Loc,
    marks: dict[Loc, tuple[int, int]],
    key_marks: dict[Loc, tuple[int, int]],
    duplicates: list[ConfigIssue],
) -> None:
    """Record the position of every value (and mapping key) by its path; collect duplicate keys."""
    marks.setdefault(loc, (node.start_mark.line + 1, node.start_mark.column + 1))
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key is None:
                continue
            child = (*loc, key)
            position = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if key in seen:
                duplicates.append(ConfigIssue(_format_loc(child), f"duplicate key {key!r}", *position))
                continue
            seen.add(key)
            key_marks[child] = position
            _index(value_node, child, marks, key_marks, duplicates)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index(item, (*loc, i), marks, key_marks, duplicates)


def _format_loc(loc: Sequence[str | int]) -> str:
    """('groups', 1, 'count') → 'groups[1].count'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _parse_path(path: str) -> Loc:
    """'groups[1].count' → ('groups', 1, 'count') (the inverse of `_format_loc`)."""
    loc: list[str | int] = []
    for segment in path.split("."):
        name, _, rest = segment.partition("[")
        if name:
            loc.append(name)
        for index in rest.replace("]", "").split("[") if rest else ():
            loc.append(int(index))
    return tuple(loc)


def _each_problem(error: ErrorDetails) -> list[ErrorDetails]:
    """A `fleet_config_many` error (several cross-reference problems found together) as one error each."""
    ctx = error.get("ctx") or {}
    if error["type"] != "fleet_config_many":
        return [error]
    return [
        {**error, "type": "fleet_config", "ctx": {"path": path, "problem": problem}}
        for path, problem in ctx["problems"]
    ]


def _issue(
    error: ErrorDetails, marks: dict[Loc, tuple[int, int]], key_marks: dict[Loc, tuple[int, int]]
) -> ConfigIssue:
    loc: Loc = tuple(error["loc"])
    kind = error["type"]
    ctx = error.get("ctx") or {}
    secret = bool(_SECRET_KEYS & {part for part in loc if isinstance(part, str)})
    if kind == "fleet_config":
        loc = (*loc, *_parse_path(str(ctx["path"])))
        problem = str(ctx["problem"])
    elif kind == "extra_forbidden":
        problem = _unknown_key(loc)
    elif kind == "missing":
        problem = "missing (required)"
    else:
        problem = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if kind == "enum":
            problem += _did_you_mean(error["input"], ctx.get("expected", ""))
        elif not secret and not kind.startswith(("value_error", "assertion")) and _is_scalar(error["input"]):
            problem += f" (got {_show(error['input'])})"
    position = key_marks.get(loc) if kind == "extra_forbidden" else None
    if position is None:
        position = _nearest(loc, marks)
    return ConfigIssue(_format_loc(loc), problem, *position)


def _nearest(loc: Loc, marks: Mapping[Loc, tuple[int, int]]) -> tuple[int, int]:
    for end in range(len(loc), -1, -1):
        if loc[:end] in marks:
            return marks[loc[:end]]
    return (1, 1)


def _unknown_key(loc: Loc) -> str:
    key = str(loc[-1])
    allowed = _fields_at(loc[:-1])
    problem = f"unknown key {key!r}"
    if allowed:
        close = difflib.get_close_matches(key, allowed, n=1)
        if close:
            problem += f" (did you mean {close[0]!r}?)"
        problem += f"; allowed here: {', '.join(allowed)}"
    return problem


def _fields_at(loc: Loc) -> list[str]:
    """The keys the model at `loc` (inside a FleetConfig) accepts; empty if it cannot be told."""
    annotation: Any = FleetConfig
    for part in loc:
        model = _model_in(annotation)
        if isinstance(part, str):
            if model is None or part not in model.model_fields:
                return []
            annotation = model.model_fields[part].annotation
        else:
            annotation = _item_type(annotation)
    model = _model_in(annotation)
    return list(model.model_fields) if model is not None else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        model = _model_in(arg)
        if model is not None:
            return model
    return None


def _item_type(annotation: Any) -> Any:
    for arg in typing.get_args(annotation):
        origin = typing.get_origin(arg) or arg
        if origin in (tuple, list):
            return typing.get_args(arg)[0]
    if typing.get_origin(annotation) in (tuple, list):
        return typing.get_args(annotation)[0]
    return None


def _did_you_mean(value: Any, expected: str) -> str:
    if not isinstance(value, str):
        return f" (got {_show(value)})"
    options = [part.strip().strip("'") for part in expected.replace(" or ", ", ").split(",")]
    close = difflib.get_close_matches(value.lower(), options, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f" (got {_show(value)}{hint})"


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) or value is None


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__
