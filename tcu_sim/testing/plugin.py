"""pytest plugin (entry point `tcu_sim`): fixtures for testing against a real Mosquitto or the embedded broker.

Fixtures:
- `mqtt_pki` (session): a fleet PKI in a temporary directory with CA, broker, `cloud` and `operator`
  certificates; car and app certificates are issued on demand (`broker.client(vin)` does it). Shared by the tests
  of one worker: revoke or re-issue only identities a test created itself.
- `mosquitto`: a started `MosquittoBroker` (TLS, ACLs, CRL, persistence) with app users `app-1`..`app-3`.
- `mosquitto_factory`: builds brokers with other settings (prefix, app users, ...); start them with `async with`.
- `amqtt_broker`: a started open-mode `EmbeddedBroker` (plaintext, no authentication) on a free port.
- `unique_topic`: a topic level unique to this test and worker, e.g. as a `Topics` prefix.

When the mosquitto binary is missing, tests that need it are skipped with a loud reason — and fail when the
environment says CI=true, so a CI image without Mosquitto cannot pass silently.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio

if TYPE_CHECKING:  # imported lazily below: a broken import here would break every pytest run in the venv
    from broker.embedded import EmbeddedBroker
    from broker.pki import FleetPKI

    from ._mosquitto import MosquittoBroker

__all__ = [
    "TEST_APP_USERS",
    "amqtt_broker",
    "mosquitto",
    "mosquitto_factory",
    "mqtt_pki",
    "require_mosquitto",
    "unique_topic",
]

TEST_APP_USERS = ("app-1", "app-2", "app-3")
_MOSQUITTO_FIXTURES = {"mosquitto", "mosquitto_factory"}


def pytest_configure(config: pytest.Config) -> None:
    """Register the `mosquitto` marker for projects that use this plugin without tcu-sim's pyproject."""
    config.addinivalue_line(
        "markers", "mosquitto: needs the mosquitto binary (skipped locally when missing, fails under CI=true)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a Mosquitto fixture, so `-m "not mosquitto"` deselects them."""
    for item in items:
        if _MOSQUITTO_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.mosquitto)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def require_mosquitto() -> Path:
    """The mosquitto binary; otherwise skip the test loudly, or fail it when CI=true."""
    from ._mosquitto import find_mosquitto

    binary = find_mosquitto()
    if binary is not None:
        return binary
    reason = (
        "MOSQUITTO NOT FOUND - this integration test needs a real broker: install Mosquitto "
        "(apt-get install mosquitto / brew install mosquitto) or set TCU_SIM_MOSQUITTO=/path/to/mosquitto. "
        "Under CI=true this is a failure, not a skip."
    )
    if _in_ci():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def mqtt_pki(tmp_path_factory: pytest.TempPathFactory) -> FleetPKI:
    """A fleet PKI for this test session (per xdist worker): CA, broker, cloud and operator certificates."""
    from broker.pki import FleetPKI

    pki = FleetPKI(tmp_path_factory.mktemp("fleet-pki"))
    pki.ensure_ca()
    pki.ensure_server()
    pki.ensure_cloud()
    pki.ensure_operator()
    return pki


@pytest_asyncio.fixture
async def mosquitto(mqtt_pki: FleetPKI, tmp_path: Path) -> AsyncIterator[MosquittoBroker]:
    """A running Mosquitto with the tcu-sim configuration, stopped after the test."""
    from ._mosquitto import MosquittoBroker

    binary = require_mosquitto()
    async with MosquittoBroker(tmp_path / "mosquitto", mqtt_pki, app_users=TEST_APP_USERS, binary=binary) as broker:
        yield broker


@pytest.fixture
def mosquitto_factory(mqtt_pki: FleetPKI, tmp_path: Path) -> Iterator[Callable[..., MosquittoBroker]]:
    """`make(**settings) -> MosquittoBroker` (not started: use `async with`). Any broker left running is killed."""
    from ._mosquitto import MosquittoBroker

    binary = require_mosquitto()
    made: list[MosquittoBroker] = []

    def make(**settings: Any) -> MosquittoBroker:
        settings.setdefault("binary", binary)
        broker = MosquittoBroker(tmp_path / f"mosquitto-{len(made) + 1}", mqtt_pki, **settings)
        made.append(broker)
        return broker

    yield make
    for broker in made:
        broker.kill_now()  # a broker the test left running would outlive it


@pytest_asyncio.fixture
async def amqtt_broker() -> AsyncIterator[EmbeddedBroker]:
    """A running embedded (amqtt) broker in open mode: plaintext, anonymous, no ACLs."""
    from broker.embedded import EmbeddedBroker

    from ._mosquitto import free_ports

    async with EmbeddedBroker("127.0.0.1", free_ports("127.0.0.1", 1)[0]) as broker:
        yield broker


@pytest.fixture
def unique_topic(request: pytest.FixtureRequest) -> str:
    """One topic level unique to this test run and xdist worker (`test-gw0-3f2a9c1d0e`)."""
    worker = getattr(request.config, "workerinput", {}).get("workerid", "main")
    return f"test-{worker}-{secrets.token_hex(5)}"
