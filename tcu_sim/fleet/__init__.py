"""Fleets: the fleet file format, its seeded expansion to cars, shards, and provisioning of keys.

    config = load_fleet("fleet_configs/demo.yaml")     # FleetConfigError names file, path and problem
    cars = expand_fleet(config)                          # same file + seed -> same VINs, positions, order
    mine = select_shard(cars, 1, 4)                      # share 1 of 4 (round robin by fleet index)
    provision(config, ".tcu-sim/demo", clock=SystemClock())   # keys, JWKS, manifest, certificates
    StateDir(".tcu-sim/demo").load_car_key(cars[0].vin)

Car selectors (users' vehicles, scenario steps): `all`, a group (`leon`), part of one (`leon[3]`,
`leon[0:5]`), or a VIN.
"""

from __future__ import annotations

from tcu_sim.fleet._config import (
    AgeRange,
    Circle,
    Connectivity,
    ConnectivityProfile,
    Coordinates,
    FleetConfig,
    FleetDefaults,
    GroupConfig,
    HomeArea,
    OutageDistribution,
    ScenarioAction,
    ScenarioStep,
    UserConfig,
    UserRole,
    Zone,
    ZoneKind,
)
from tcu_sim.fleet._duration import Duration, format_duration, parse_duration
from tcu_sim.fleet._errors import ConfigIssue, FleetConfigError, FleetError, ShardError, StateDirError
from tcu_sim.fleet._expand import (
    REFERENCE_DATE,
    CarSpec,
    Shard,
    expand_fleet,
    parse_shard,
    select_cars,
    select_shard,
)
from tcu_sim.fleet._limits import raise_open_files_limit
from tcu_sim.fleet._load import fleet_schema, fleet_schema_json, load_fleet, parse_fleet
from tcu_sim.fleet._lock import (
    ENDPOINTS_FILE,
    LOCK_FILE,
    Endpoints,
    StateBusy,
    StateLock,
    read_endpoints,
    remove_endpoints,
    write_endpoints,
)
from tcu_sim.fleet._provision import ProvisionResult, issue_certificates, provision
from tcu_sim.fleet._runner import (
    BrokerUrl,
    FleetHook,
    FleetRunner,
    NoHook,
    car_tls_context,
    parse_broker_url,
    parse_broker_urls,
)
from tcu_sim.fleet._selectors import CarSelector, parse_selector
from tcu_sim.fleet._state import CLOUD_KID, Manifest, ManifestVehicle, StateDir

__all__ = [
    "CLOUD_KID",
    "ENDPOINTS_FILE",
    "LOCK_FILE",
    "REFERENCE_DATE",
    "AgeRange",
    "BrokerUrl",
    "CarSelector",
    "CarSpec",
    "Circle",
    "ConfigIssue",
    "Connectivity",
    "ConnectivityProfile",
    "Coordinates",
    "Duration",
    "Endpoints",
    "FleetConfig",
    "FleetConfigError",
    "FleetDefaults",
    "FleetError",
    "FleetHook",
    "FleetRunner",
    "GroupConfig",
    "HomeArea",
    "Manifest",
    "ManifestVehicle",
    "NoHook",
    "OutageDistribution",
    "ProvisionResult",
    "ScenarioAction",
    "ScenarioStep",
    "Shard",
    "ShardError",
    "StateBusy",
    "StateDir",
    "StateDirError",
    "StateLock",
    "UserConfig",
    "UserRole",
    "Zone",
    "ZoneKind",
    "car_tls_context",
    "expand_fleet",
    "fleet_schema",
    "fleet_schema_json",
    "format_duration",
    "issue_certificates",
    "load_fleet",
    "parse_broker_url",
    "parse_broker_urls",
    "parse_duration",
    "parse_fleet",
    "parse_selector",
    "parse_shard",
    "provision",
    "raise_open_files_limit",
    "read_endpoints",
    "remove_endpoints",
    "select_cars",
    "select_shard",
    "write_endpoints",
]
