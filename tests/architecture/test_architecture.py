"""The spine's structural rules (docs/architecture.md), checked on the source: one place builds the cloud,
nothing observes the cloud or the fleet by replacing a method, and the import-linter contracts hold."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = (ROOT / "tcu_sim", ROOT / "broker")


def _modules() -> Iterator[tuple[Path, ast.Module]]:
    for package in PRODUCTION:
        for path in sorted(package.rglob("*.py")):
            yield path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _called(tree: ast.AST, name: str) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if called == name:
                lines.append(node.lineno)
    return lines


def test_exactly_one_production_module_constructs_the_cloud_handler() -> None:
    builders = {
        str(path.relative_to(ROOT)): lines for path, tree in _modules() if (lines := _called(tree, "CloudHandler"))
    }
    assert list(builders) == ["broker/runtime/_open.py"], builders


def test_no_method_of_another_object_is_replaced_at_run_time() -> None:
    """No `# type: ignore[method-assign]`, and no function or lambda made on the spot assigned to an attribute
    of another object (`handler.pusher.command_progress = observed`)."""
    found = []
    for path, tree in _modules():
        where = str(path.relative_to(ROOT))
        if "method-assign" in path.read_text(encoding="utf-8"):
            found.append(f"{where}: method-assign")
        for scope in ast.walk(tree):
            if not isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            local_functions = {
                n.name for n in ast.walk(scope) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
            }
            for node in ast.walk(scope):
                if not isinstance(node, ast.Assign):
                    continue
                for target in node.targets:
                    if not isinstance(target, ast.Attribute):
                        continue
                    owner = target.value
                    if isinstance(owner, ast.Name) and owner.id in {"self", "cls"}:
                        continue
                    value = node.value
                    if isinstance(value, ast.Lambda) or (isinstance(value, ast.Name) and value.id in local_functions):
                        found.append(f"{where}:{node.lineno}: {ast.unparse(target)} = {ast.unparse(value)[:40]}")
    assert found == []


def test_the_import_contracts_hold() -> None:
    """`make lint` runs the same check; here it is part of the suite, so a layer broken by a test-only change to
    the configuration is seen too."""
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if lint_imports is None:
        pytest.fail("lint-imports is not installed (pip install -e '.[dev]')")
    done = subprocess.run([lint_imports], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "BROKEN" not in done.stdout
