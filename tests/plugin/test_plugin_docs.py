"""docs/testing.md is run, not only read: its test files as one pytest project (through pytester, with the
doc's ini and yaml blocks), its scripts as scripts."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "testing.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.DOTALL | re.MULTILINE)
NAMED = re.compile(r"# ((?:[\w-]+/)*[\w.-]+\.(?:py|ini|yaml))$")
SCRIPT = re.compile(r"# script: ([\w.-]+\.py)$")


def doc_blocks() -> tuple[dict[str, str], dict[str, str]]:
    """({file name: text} of the project files, {script name: text}) of docs/testing.md."""
    files: dict[str, str] = {}
    scripts: dict[str, str] = {}
    for language, text in BLOCK.findall(DOC.read_text(encoding="utf-8")):
        first, _, rest = text.partition("\n")
        if (script := SCRIPT.fullmatch(first.strip())) is not None:
            scripts[script.group(1)] = rest
        elif (named := NAMED.fullmatch(first.strip())) is not None:
            files[named.group(1)] = rest
        elif language == "python":
            pytest.fail(f"docs/testing.md: a python block names no test file or script: {first[:60]!r}")
    return files, scripts


def test_every_python_block_is_run() -> None:
    files, scripts = doc_blocks()
    expected = {"pytest.ini", "test_remote_lock.py", "test_offline.py", "test_fleet_file.py", "test_faults.py"}
    assert expected <= set(files)
    assert len(scripts) >= 2


def test_the_doc_test_files_pass(pytester: pytest.Pytester) -> None:
    files, _ = doc_blocks()
    for name, text in files.items():
        path = pytester.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    tests = sum(len(re.findall(r"^async def test_", text, re.MULTILINE)) for text in files.values())
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "--timeout", "60", timeout=150)
    result.assert_outcomes(passed=tests)


@pytest.mark.parametrize("name", sorted(doc_blocks()[1]))
def test_the_doc_scripts_run(name: str, tmp_path: Path) -> None:
    script = tmp_path / name
    script.write_text(doc_blocks()[1][name], encoding="utf-8")
    # From the repository root, as a reader would run them (fleet_configs/demo.yaml is relative to it).
    done = subprocess.run(
        [sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"{name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
