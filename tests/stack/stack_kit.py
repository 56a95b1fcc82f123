"""Shared bits of the stack tests: the demo fleet, its users' secrets, a fast password hash."""

from __future__ import annotations

from pathlib import Path

from broker.cloud import PasswordHasher
from tcu_sim.fleet import FleetConfig, UserRole, load_fleet
from tcu_sim.stack import LocalStack, StackConfig

REPO = Path(__file__).resolve().parents[2]
DEMO_FLEET = REPO / "fleet_configs" / "demo.yaml"
WAIT = 10.0  # seconds any single wait may take before the test fails


def demo() -> FleetConfig:
    """The fleet `make run` starts."""
    return load_fleet(DEMO_FLEET)


def demo_user(fleet: FleetConfig) -> tuple[str, str, str]:
    """E-mail, password and S-PIN of the fleet's first primary user."""
    user = next(u for u in fleet.users if u.role is UserRole.PRIMARY)
    return user.email, user.password.get_secret_value(), user.spin.get_secret_value()


def local_stack(state: Path, fleet: FleetConfig | None = None, **settings: object) -> LocalStack:
    """A stack on free ports with cheap password hashing (the rest as `tcu-sim up` runs it)."""
    config = StackConfig.model_validate({"state_dir": state, "port": 0, **settings})
    return LocalStack(fleet or demo(), config, passwords=PasswordHasher.for_tests())
