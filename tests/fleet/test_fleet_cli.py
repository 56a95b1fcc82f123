"""`tcu-sim fleet validate | schema | provision`: output, exit codes, errors without tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from tcu_sim.cli import cli
from tcu_sim.cli.fleet import SHARD, fleet
from tcu_sim.fleet import Shard, StateDir, fleet_schema

DEMO = Path(__file__).resolve().parents[2] / "fleet_configs" / "demo.yaml"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["--log-level", "ERROR", "fleet", *args])
    return result.exit_code, result.stdout, result.stderr


def test_fleet_group_is_registered() -> None:
    assert cli.get_command(click.Context(cli), "fleet") is fleet


def test_validate_a_good_file() -> None:
    code, out, _ = run("validate", str(DEMO))
    assert code == 0
    assert "ok: fleet 'demo'" in out
    assert "20 cars in 7 groups" in out


def test_validate_lists_cars() -> None:
    code, out, _ = run("validate", str(DEMO), "--list")
    assert code == 0
    assert len(out.splitlines()) == 21
    assert out.splitlines()[1].split()[1].startswith("VSS")


def test_validate_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEMO.read_text().replace("count: 4", "count: -4", 1))
    code, out, err = run("validate", str(bad))
    assert code == 1
    assert f"{bad}:" in err
    assert "groups[0].count: Input should be greater than or equal to 1" in err
    assert "Traceback" not in out + err


def test_validate_a_missing_file(tmp_path: Path) -> None:
    code, _, err = run("validate", str(tmp_path / "none.yaml"))
    assert code == 1
    assert "none.yaml: cannot read the file" in err


def test_schema_prints_the_schema() -> None:
    code, out, _ = run("schema")
    assert code == 0
    assert json.loads(out) == fleet_schema()


def test_schema_writes_a_file(tmp_path: Path) -> None:
    code, _, _ = run("schema", "-o", str(tmp_path / "s.json"))
    assert code == 0
    assert json.loads((tmp_path / "s.json").read_text()) == fleet_schema()


def test_provision(tmp_path: Path) -> None:
    state = tmp_path / "state"
    code, out, _ = run("provision", str(DEMO), "--state", str(state))
    assert code == 0, out
    assert "20 cars provisioned (20 new keys, 0 kept, cloud key created, 24 certificates issued)" in out
    assert len(StateDir(state).load_fleet_keys()) == 20
    code, out, _ = run("provision", str(DEMO), "--state", str(state), "--no-pki")
    assert code == 0
    assert "(0 new keys, 20 kept)" in out


def test_provision_into_a_file_fails_cleanly(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    code, out, err = run("provision", str(DEMO), "--state", str(tmp_path / "file" / "sub"), "--no-pki")
    assert code != 0
    assert "Traceback" not in out + err


def test_shard_option_type() -> None:
    @click.command()
    @click.option("--shard", type=SHARD)
    def show(shard: Shard) -> None:
        click.echo(repr(shard))

    runner = CliRunner()
    assert runner.invoke(show, ["--shard", "2/3"]).stdout.strip() == "Shard(index=2, count=3)"
    bad = runner.invoke(show, ["--shard", "4/3"])
    assert bad.exit_code == 2
    assert "shard index must be between 1 and 3, got 4" in bad.stderr


@pytest.mark.parametrize("args", [["--help"], ["validate", "--help"], ["provision", "--help"]])
def test_help(args: list[str]) -> None:
    code, out, _ = run(*args)
    assert code == 0
    assert "Usage:" in out
