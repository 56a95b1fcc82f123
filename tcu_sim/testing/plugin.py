"""pytest plugin (entry point `tcu_sim`): the whole tcu-sim system as fixtures, on a real broker.

Installing tcu-sim makes these fixtures available in any project (no conftest.py needed):

- `mqtt_broker` (scope: `--tcu-scope`, default function): a `SimBroker` — a real Mosquitto on free loopback
  ports with TLS and the generated ACLs (default, `--tcu-broker mosquitto`); the embedded broker
  (`--tcu-broker embedded`, or `auto`: Mosquitto when installed, else embedded); or an existing broker
  (`--tcu-broker mqtt://host:port`).
- `clock`: the `SimClock` (virtual time) the test's cloud and cars share; `await clock.advance(s)`.
- `tcu_sandbox`: the `Sandbox` behind the fixtures below (one per test, its files in `tmp_path`);
  `tcu_sandbox.events` is the one event stream its cloud and fleets publish into.
- `cloud`: the `SimCloud` (the real cloud handler, SQLite registry in tmp) on `mqtt_broker`, on `clock`.
- `fleet`: a running `SimFleet` from `@pytest.mark.tcu_fleet("fleet.yaml")`, `--tcu-fleet`, or the default
  fleet (a Leon and a radio Ateca); `fleet_factory(path_or_config)` starts more.
- `car`: the fleet's first car (`SimCar`), online.
- `app_user`: a registered, verified, logged-in `SimUser` with an S-PIN; `app_user_factory(...)` makes more.
- `faults`: `SimFaults` for the fleet's cars and the broker.
- `tcu_seed` (session): the seed of the run (`--tcu-seed`, default 0); `tcu_cloud_config` (override it to
  change the cloud's rules, e.g. the command TTL).

Options exist as ini settings too (`tcu_broker`, `tcu_seed`, `tcu_scope`, `tcu_fleet`, `tcu_timeout`,
`tcu_topic_prefix`, `tcu_broker_pki`); the command line wins.

Lower-level fixtures used by tcu-sim's own suite: `mqtt_pki` (session), `mosquitto`, `mosquitto_factory`,
`amqtt_broker`, `unique_topic`.

When the mosquitto binary is missing, tests that need it are skipped with a loud reason — and fail when the
environment says CI=true, so a CI image without Mosquitto cannot pass silently.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

import pytest

from broker.cloud import CloudConfig
from broker.launch import BrokerChoice, BrokerKind, select_broker
from broker.mosquitto import MosquittoBroker, find_mosquitto, free_ports
from broker.pki import FleetPKI
from tcu_sim.fleet import FleetConfig

from ._brokers import SimBroker
from ._clock import SimClock
from ._cloud import SimCloud
from ._errors import HarnessError, HarnessSetupError
from ._factories import AppUserFactory, FleetFactory
from ._faults import SimFaults
from ._fleet import SimCar, SimFleet
from ._sandbox import Sandbox, resolve_fleet
from ._user import SimUser

try:
    import pytest_asyncio
except ImportError:  # tcu-sim installed without its test extras: keep every other pytest run working
    pytest_asyncio = None  # type: ignore[assignment]  # checked in async_fixture()

if TYPE_CHECKING:  # imported where used: amqtt is slow to import, and only `amqtt_broker` needs it
    from broker.embedded import EmbeddedBroker


__all__ = [
    "TEST_APP_USERS",
    "AppUserFactory",
    "FleetFactory",
    "TcuSettings",
    "amqtt_broker",
    "app_user",
    "app_user_factory",
    "car",
    "clock",
    "cloud",
    "faults",
    "fleet",
    "fleet_factory",
    "mosquitto",
    "mosquitto_factory",
    "mqtt_broker",
    "mqtt_pki",
    "require_mosquitto",
    "tcu_clock",
    "tcu_cloud_config",
    "tcu_fleet_config",
    "tcu_sandbox",
    "tcu_seed",
    "tcu_settings",
    "unique_topic",
]

TEST_APP_USERS = ("app-1", "app-2", "app-3")
_MOSQUITTO_FIXTURES = {"mosquitto", "mosquitto_factory"}
_SCOPES = ("function", "module", "package", "session")
_BROKERS = ("mosquitto", "embedded", "auto")
Scope = Literal["function", "module", "package", "session"]

# --- options ---------------------------------------------------------------------------------------------------

_OPTIONS: tuple[tuple[str, str, str, str], ...] = (
    # (command line, ini name, default, help)
    ("--tcu-broker", "tcu_broker", "mosquitto",
     "broker for the tcu-sim fixtures: mosquitto (default; skipped locally / failed under CI=true when the "
     "binary is missing), embedded (amqtt, in-process), auto (Mosquitto when installed, else embedded), or "
     "the URL of a running broker (mqtt://host:port, mqtts://host:port with --tcu-broker-pki)"),
    ("--tcu-broker-pki", "tcu_broker_pki", "",
     "fleet PKI directory (tcu-sim pki init) that issued an external mqtts:// broker's certificates"),
    ("--tcu-seed", "tcu_seed", "0", "seed of the run: same seed, same VINs, ids and random draws (default 0)"),
    ("--tcu-scope", "tcu_scope", "function",
     "scope of the mqtt_broker fixture: function (default: a broker per test), module, package or session"),
    ("--tcu-fleet", "tcu_fleet", "",
     "fleet file for the `fleet` fixture when a test has no tcu_fleet marker (default: a Leon and an Ateca)"),
    ("--tcu-timeout", "tcu_timeout", "10", "seconds a tcu-sim helper waits before it fails the test (default 10)"),
    ("--tcu-topic-prefix", "tcu_topic_prefix", "", "topic prefix of the test broker's ACLs (default none)"),
)


def pytest_addoption(parser: pytest.Parser) -> None:
    """The tcu-sim options, each also an ini setting."""
    group = parser.getgroup("tcu-sim", "tcu-sim simulated cars, cloud and broker")
    for flag, ini, default, help_text in _OPTIONS:
        group.addoption(flag, dest=ini, default=None, help=f"{help_text} [ini: {ini}]")
        parser.addini(ini, help=help_text, default=default)


@dataclass(frozen=True, slots=True)
class TcuSettings:
    """The tcu-sim options of this run, resolved (command line, then ini, then default) and checked."""

    broker: str
    broker_pki: Path | None
    seed: int
    scope: Scope
    fleet: Path | None
    timeout: float
    topic_prefix: str

    def describe(self) -> str:
        """One line for the pytest header."""
        fleet = f", fleet={self.fleet}" if self.fleet else ""
        return f"tcu-sim: broker={self.broker}, scope={self.scope}, seed={self.seed}, timeout={self.timeout:g}s{fleet}"


_SETTINGS = pytest.StashKey[TcuSettings]()


def _value(config: pytest.Config, ini: str) -> str:
    given = config.getoption(ini, default=None)
    return str(given if given is not None else config.getini(ini)).strip()


def tcu_settings_of(config: pytest.Config) -> TcuSettings:
    """The run's `TcuSettings`; a bad value is a usage error naming the option."""
    cached = config.stash.get(_SETTINGS, None)
    if cached is not None:
        return cached
    broker = _value(config, "tcu_broker") or "mosquitto"
    if broker not in _BROKERS and not broker.startswith(("mqtt://", "mqtts://")):
        raise pytest.UsageError(f"--tcu-broker {broker!r}: use {', '.join(_BROKERS)}, mqtt://host:port or mqtts://...")
    try:
        seed = int(_value(config, "tcu_seed") or "0")
    except ValueError:
        raise pytest.UsageError(f"--tcu-seed {_value(config, 'tcu_seed')!r}: must be an integer") from None
    scope = _value(config, "tcu_scope") or "function"
    if scope not in _SCOPES:
        raise pytest.UsageError(f"--tcu-scope {scope!r}: use one of {', '.join(_SCOPES)}")
    try:
        timeout = float(_value(config, "tcu_timeout") or "10")
    except ValueError:
        timeout = -1.0
    if not timeout > 0:
        raise pytest.UsageError(f"--tcu-timeout {_value(config, 'tcu_timeout')!r}: must be a positive number")
    root = config.rootpath
    fleet = _value(config, "tcu_fleet")
    pki = _value(config, "tcu_broker_pki")
    settings = TcuSettings(
        broker=broker,
        broker_pki=(root / pki) if pki else None,
        seed=seed,
        scope=cast(Scope, scope),
        fleet=(root / fleet) if fleet else None,
        timeout=timeout,
        topic_prefix=_value(config, "tcu_topic_prefix"),
    )
    config.stash[_SETTINGS] = settings
    return settings


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers for projects that use this plugin without tcu-sim's pyproject; check the options."""
    config.addinivalue_line(
        "markers", "mosquitto: needs the mosquitto binary (skipped locally when missing, fails under CI=true)"
    )
    config.addinivalue_line(
        "markers",
        "tcu_fleet(source, *, proxy='none'): the fleet of the `fleet` fixture - a fleet file (relative to the "
        "test file), YAML text, a dict or a FleetConfig; proxy='car'|'group' enables transport faults",
    )
    tcu_settings_of(config)


def pytest_report_header(config: pytest.Config) -> str:
    """`tcu-sim: broker=mosquitto, scope=function, seed=0, timeout=10s` above the test run."""
    return tcu_settings_of(config).describe()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that uses a Mosquitto fixture, so `-m "not mosquitto"` deselects them."""
    needs = set(_MOSQUITTO_FIXTURES)
    if tcu_settings_of(config).broker == "mosquitto":
        needs.add("mqtt_broker")
    for item in items:
        if needs.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.mosquitto)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def require_mosquitto() -> Path:
    """The mosquitto binary; otherwise skip the test loudly, or fail it when CI=true."""

    binary = find_mosquitto()
    if binary is not None:
        return binary
    reason = (
        "MOSQUITTO NOT FOUND - this integration test needs a real broker: install Mosquitto "
        "(apt-get install mosquitto / brew install mosquitto) or set TCU_SIM_MOSQUITTO=/path/to/mosquitto, "
        "or run with --tcu-broker embedded (or auto) to use the in-process broker. "
        "Under CI=true this is a failure, not a skip."
    )
    if _in_ci():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


# --- the tcu-sim system as fixtures ----------------------------------------------------------------------------

F = TypeVar("F", bound=Callable[..., Any])


def async_fixture(func: F) -> F:
    """`pytest_asyncio.fixture`, or — without pytest-asyncio — a fixture that fails saying what to install."""
    if pytest_asyncio is not None:
        return cast(F, pytest_asyncio.fixture(func))

    def missing() -> None:
        pytest.fail(
            f"tcu-sim: the {func.__name__} fixture needs pytest-asyncio (pip install pytest-asyncio) and async "
            "tests (asyncio_mode = auto, or @pytest.mark.asyncio)",
            pytrace=False,
        )

    missing.__doc__ = func.__doc__
    return cast(F, pytest.fixture(name=func.__name__)(missing))



@pytest.fixture(scope="session")
def tcu_settings(pytestconfig: pytest.Config) -> TcuSettings:
    """The tcu-sim options of this run (`--tcu-broker`, `--tcu-seed`, `--tcu-scope`, ...)."""
    return tcu_settings_of(pytestconfig)


@pytest.fixture(scope="session")
def tcu_seed(tcu_settings: TcuSettings) -> int:
    """The seed of the run (`--tcu-seed N` / ini `tcu_seed`; default 0): same seed, same run."""
    return tcu_settings.seed


def _broker_scope(fixture_name: str, config: pytest.Config) -> Scope:
    return tcu_settings_of(config).scope


@pytest.fixture(scope=_broker_scope)
def mqtt_broker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SimBroker]:
    """The broker of the tcu-sim fixtures (`--tcu-broker`, scope `--tcu-scope`): a `SimBroker` with `host`,
    `port`, `url`, `device_tls(identity)`, `client(identity)`, `new_app_login()`, `stop/kill/start()`."""


    settings = tcu_settings_of(request.config)
    if settings.broker == BrokerChoice.MOSQUITTO:
        require_mosquitto()  # a missing binary skips the test here (fails it under CI=true)
    selected = select_broker(settings.broker)
    try:
        if selected.kind is BrokerKind.EXTERNAL:
            pki = FleetPKI(settings.broker_pki) if settings.broker_pki is not None else None
            broker = SimBroker.open(BrokerKind.EXTERNAL, url=selected.url, pki=pki, topic_prefix=settings.topic_prefix)
        else:
            directory = tmp_path_factory.mktemp("tcu-broker")
            pki = FleetPKI(directory / "pki")
            pki.ensure_ca()
            broker = SimBroker.open(
                selected.kind,
                directory=directory / "broker",
                pki=pki,
                topic_prefix=settings.topic_prefix,
                shared=settings.scope != "function",
                binary=selected.binary,
            )
    except HarnessSetupError as exc:
        failure: str | None = str(exc)
    else:
        failure = None
    if failure is not None:
        pytest.fail(f"tcu-sim: {failure}", pytrace=False)
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture
def tcu_clock() -> SimClock:
    """The `SimClock` of the test's sandbox (what `clock` hands out; a project's own `clock` fixture does not
    replace it)."""

    return SimClock()


@pytest.fixture
def clock(tcu_clock: SimClock) -> SimClock:
    """Virtual time shared by the test's cloud and cars: it moves only on `await clock.advance(seconds)`, and
    the cloud applies its time rules (command expiry) before `advance` returns."""
    return tcu_clock


@pytest.fixture
def tcu_cloud_config() -> CloudConfig | None:
    """The cloud's rules (`broker.cloud.CloudConfig`: command TTL, S-PIN lock, ...); None: the product's.
    Override this fixture in a test module or conftest to change them."""
    return None


@async_fixture
async def tcu_sandbox(
    request: pytest.FixtureRequest,
    mqtt_broker: SimBroker,
    tcu_clock: SimClock,
    tcu_seed: int,
    tcu_cloud_config: CloudConfig | None,
    tmp_path: Path,
) -> AsyncIterator[Sandbox]:
    """The `Sandbox` behind `cloud`, `fleet`, `app_user` and `faults`: the cloud runs once this is set up."""

    settings = tcu_settings_of(request.config)
    sandbox = Sandbox(
        tmp_path / "tcu-sim",
        broker=mqtt_broker,
        seed=tcu_seed,
        name=request.node.nodeid,
        clock=tcu_clock,
        cloud_config=tcu_cloud_config,
        timeout=settings.timeout,
    )
    try:
        await sandbox.__aenter__()
    except HarnessSetupError as exc:
        problem: str | None = str(exc)
    else:
        problem = None
    if problem is not None:
        pytest.fail(f"tcu-sim: {problem}", pytrace=False)
    try:
        yield sandbox
    finally:
        await sandbox.__aexit__(None, None, None)


@pytest.fixture
def cloud(tcu_sandbox: Sandbox) -> SimCloud:
    """The cloud (the real handler, SQLite registry in tmp) on `mqtt_broker`, on `clock`."""
    return tcu_sandbox.cloud


def _fleet_marker(request: pytest.FixtureRequest) -> tuple[Any, dict[str, Any]]:
    marker = request.node.get_closest_marker("tcu_fleet")
    if marker is None:
        return None, {}
    if len(marker.args) != 1:
        raise pytest.UsageError(f"{request.node.nodeid}: @pytest.mark.tcu_fleet takes one fleet (path, YAML or dict)")
    return marker.args[0], dict(marker.kwargs)


@pytest.fixture
def tcu_fleet_config(request: pytest.FixtureRequest, tcu_seed: int) -> FleetConfig:
    """The fleet of the `fleet` fixture: `@pytest.mark.tcu_fleet(...)`, else `--tcu-fleet`, else the default
    fleet (a Leon, which enrols by two-key verification, and a radio Ateca, which enrols by pairing code)."""

    source, _ = _fleet_marker(request)
    base = Path(request.node.path).parent
    if source is None:
        source = tcu_settings_of(request.config).fleet
        base = request.config.rootpath
    try:
        return resolve_fleet(source, seed=tcu_seed, base=base)
    except HarnessSetupError as exc:
        problem = str(exc)
    pytest.fail(f"tcu-sim: {problem}", pytrace=False)


@pytest.fixture
def fleet_factory(request: pytest.FixtureRequest, tcu_sandbox: Sandbox) -> FleetFactory:
    """`await fleet_factory(path_or_config, proxy="none")`: provision and start a fleet on the test's broker and
    cloud (paths are relative to the test file); stopped after the test."""
    base = Path(request.node.path).parent

    async def make(source: Any = None, *, proxy: str = "none", online_timeout: float | None = None) -> SimFleet:
        return await tcu_sandbox.start_fleet(source, base=base, proxy=proxy, online_timeout=online_timeout)

    return make


@async_fixture
async def fleet(request: pytest.FixtureRequest, tcu_sandbox: Sandbox, tcu_fleet_config: FleetConfig) -> SimFleet:
    """The test's fleet (see `tcu_fleet_config`), running: every car that starts with a signal is online."""

    _, options = _fleet_marker(request)
    try:
        return await tcu_sandbox.start_fleet(tcu_fleet_config, proxy=str(options.get("proxy", "none")))
    except HarnessError as exc:  # a fleet that cannot start: say why, without the harness's traceback
        problem = f"{type(exc).__name__}: {exc}"
    pytest.fail(f"tcu-sim: fleet {tcu_fleet_config.name!r} did not start: {problem}", pytrace=False)


@pytest.fixture
def car(fleet: SimFleet) -> SimCar:
    """The fleet's first car, online: `await car.wait_for(locked=True)`, `car.control(...)`, `car.status()`."""
    return fleet.car(0)


@pytest.fixture
def app_user_factory(tcu_sandbox: Sandbox) -> AppUserFactory:
    """`await app_user_factory(email=None, spin=..., verified=True, logged_in=True)`: another app user."""
    return tcu_sandbox.new_user


@async_fixture
async def app_user(tcu_sandbox: Sandbox) -> SimUser:
    """A registered, verified, logged-in app user (`driver@example.com`, S-PIN `app_user.spin`) with a
    connected app: `await app_user.enrol(car)`, `await app_user.command(car, "lock")`."""
    return await tcu_sandbox.new_user("driver@example.com")


@pytest.fixture
def faults(tcu_sandbox: Sandbox, fleet: SimFleet) -> SimFaults:
    """Fault injection: `await faults.offline(car)`, `faults.online(car)`, `faults.inject(car, {...})`,
    `faults.broker_kill()`, `faults.broker_start()`."""
    return tcu_sandbox.faults_for(fleet)


# --- lower-level fixtures (tcu-sim's own suite) ----------------------------------------------------------------


@pytest.fixture(scope="session")
def mqtt_pki(tmp_path_factory: pytest.TempPathFactory) -> FleetPKI:
    """A fleet PKI for this test session (per xdist worker): CA, broker, cloud and operator certificates."""

    pki = FleetPKI(tmp_path_factory.mktemp("fleet-pki"))
    pki.ensure_ca()
    pki.ensure_server()
    pki.ensure_cloud()
    pki.ensure_operator()
    return pki


@async_fixture
async def mosquitto(mqtt_pki: FleetPKI, tmp_path: Path) -> AsyncIterator[MosquittoBroker]:
    """A running Mosquitto with the tcu-sim configuration, stopped after the test."""

    binary = require_mosquitto()
    async with MosquittoBroker(tmp_path / "mosquitto", mqtt_pki, app_users=TEST_APP_USERS, binary=binary) as broker:
        yield broker


@pytest.fixture
def mosquitto_factory(mqtt_pki: FleetPKI, tmp_path: Path) -> Iterator[Callable[..., MosquittoBroker]]:
    """`make(**settings) -> MosquittoBroker` (not started: use `async with`). Any broker left running is killed."""

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


@async_fixture
async def amqtt_broker() -> AsyncIterator[EmbeddedBroker]:
    """A running embedded (amqtt) broker in open mode: plaintext, anonymous, no ACLs."""
    from broker.embedded import EmbeddedBroker  # amqtt is slow to import: only when this fixture runs

    async with EmbeddedBroker("127.0.0.1", free_ports("127.0.0.1", 1)[0]) as broker:
        yield broker


@pytest.fixture
def unique_topic(request: pytest.FixtureRequest) -> str:
    """One topic level unique to this test run and xdist worker (`test-gw0-3f2a9c1d0e`)."""
    worker = getattr(request.config, "workerinput", {}).get("workerid", "main")
    return f"test-{worker}-{secrets.token_hex(5)}"
