"""Contract tests of the HTTP app API with schemathesis, against the project's own `/openapi.json`: generated
requests (valid and invalid) to every operation, each response checked against the document (status codes,
content types, schemas, no server error). The server runs the real cloud over a real Mosquitto in a loop
thread, so schemathesis's synchronous client can call it; a bounded number of examples keeps it to seconds."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance

from broker.http import ApiConfig, HttpApi, HttpServer, serve_http
from tcu_sim.testing import Sandbox
from tcu_sim.testing._loopthread import LoopThread
from tcu_sim.testing.plugin import require_mosquitto

pytestmark = pytest.mark.mosquitto


@dataclass
class Target:
    url: str
    token: str


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    require_mosquitto()
    thread = LoopThread("http-contract")
    sandbox = Sandbox(tmp_path_factory.mktemp("contract"), broker="mosquitto")
    config = ApiConfig(rate_capacity=1_000_000, sse_max_s=0.2, sse_heartbeat_s=0.1)
    holder: dict[str, Any] = {}

    async def start() -> HttpServer:
        await sandbox.__aenter__()
        user = await sandbox.new_user("contract@example.com")
        holder["email"], holder["password"] = user.email, user.password
        api = HttpApi(sandbox.cloud.handler, config)
        holder["api"] = api
        serving = serve_http(api.app, "127.0.0.1", 0)
        holder["serving"] = serving
        return await serving.__aenter__()

    async def stop() -> None:
        await holder["serving"].__aexit__(None, None, None)
        holder["api"].close()
        await sandbox.__aexit__(None, None, None)

    try:
        server = thread.call(start(), timeout=60)
        login = httpx.post(f"{server.url}/api/v1/login",
                           json={"email": holder["email"], "password": holder["password"]})
        yield Target(server.url, login.json()["token"])
    finally:
        if "serving" in holder:
            thread.call(stop(), timeout=60)
        thread.close()


def test_the_document_is_openapi_3_1_with_every_error_code(target: Target) -> None:
    document = httpx.get(f"{target.url}/openapi.json").json()
    assert document["openapi"].startswith("3.1.")
    codes = set(document["components"]["schemas"]["Problem"]["properties"]["code"]["$ref"].split("/")[-1:])
    assert codes  # the code is the ErrorCode enum
    error_code = document["components"]["schemas"]["ErrorCode"]["enum"]
    assert "VEHICLE_NOT_FOUND" in error_code
    assert "SPIN_LOCKED" in error_code
    assert len(error_code) == 21
    assert all("422" not in op["responses"] for path in document["paths"].values() for op in path.values())


# `positive_data_acceptance` is left out: the cloud's rules answer some schema-valid bodies 400 by design (a
# trivial S-PIN is SPIN_POLICY, unaccepted terms TERMS_AND_CONDITIONS_NOT_ACCEPTED, a malformed e-mail address
# INVALID_REQUEST), which a JSON Schema cannot express; every other default check runs.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_keeps_its_contract(target: Target, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(f"{target.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]  # an invalid operation (Err) fails here
    assert len(operations) == 23  # the 22 ops of SPEC 2.5 and the event stream
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)
        def check(case: schemathesis.Case[Any]) -> None:
            case.call_and_validate(base_url=target.url, headers={"Authorization": f"Bearer {target.token}"},
                                   excluded_checks=[positive_data_acceptance])

        check()


def test_the_served_document_is_the_one_built_in(target: Target, tmp_path: Path) -> None:
    served = httpx.get(f"{target.url}/openapi.json")
    assert served.headers["content-type"] == "application/json"
    assert "/api/v1/vehicles/{vin}/commands" in served.json()["paths"]
