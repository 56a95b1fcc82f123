"""The AsyncAPI 3.0 contract (docs/asyncapi.yaml): generated from the models, valid AsyncAPI 3.0, and every example
of docs/protocol.md validates against its message schema with an independent JSON Schema validator (jsonschema)."""

from __future__ import annotations

import base64
import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from click.testing import CliRunner
from test_protocol_docs import blocks

from tcu_sim.cli import cli
from tcu_sim.cli.asyncapi import render
from tcu_sim.protocol import asyncapi_document

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "docs" / "asyncapi.yaml"
# schemas/3.0.0.json of the npm package @asyncapi/specs (see the README beside it): no network at test time
ASYNCAPI_SCHEMA = Path(__file__).parent / "asyncapi-3.0.0" / "asyncapi-3.0.0.schema.json"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMMITTED.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def asyncapi_validator() -> jsonschema.Draft7Validator:
    schema = json.loads(ASYNCAPI_SCHEMA.read_text(encoding="utf-8"))
    return jsonschema.Draft7Validator(schema)


def schema_of(document: dict[str, Any], name: str) -> jsonschema.Draft202012Validator:
    """A validator for components.schemas[name], resolving the document's own `$ref`s."""
    schema = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    return jsonschema.Draft202012Validator(schema)


def test_committed_document_is_the_generated_one() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == render(), "run: tcu-sim asyncapi -o docs/asyncapi.yaml"


def test_cli_writes_the_document(tmp_path: Path) -> None:
    out = tmp_path / "asyncapi.yaml"
    result = CliRunner().invoke(cli, ["asyncapi", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(out.read_text(encoding="utf-8")) == asyncapi_document()


def test_document_is_valid_asyncapi_3(document: dict[str, Any], asyncapi_validator: jsonschema.Draft7Validator) -> None:
    assert document["asyncapi"] == "3.0.0"
    errors = [f"{list(e.absolute_path)}: {e.message[:200]}" for e in asyncapi_validator.iter_errors(document)]
    assert errors == []


def test_the_asyncapi_schema_catches_a_broken_document(
    document: dict[str, Any], asyncapi_validator: jsonschema.Draft7Validator
) -> None:
    broken = copy.deepcopy(document)
    broken["operations"]["cloudSendsTcuCommands"]["action"] = "publish"  # AsyncAPI 2 wording, not 3
    assert not asyncapi_validator.is_valid(broken)


def test_every_channel_of_the_spec_with_direction_qos_and_retain(document: dict[str, Any]) -> None:
    expected = {  # SPEC §2.1: address -> (from, to, retained)
        "tcu/{vin}/status": ("tcu", "cloud", True),
        "tcu/{vin}/events": ("tcu", "cloud", False),
        "tcu/{vin}/commands": ("cloud", "tcu", False),
        "tcu/{vin}/results": ("tcu", "cloud", False),
        "tcu/{vin}/connection": ("tcu", "cloud", True),
        "app/{client_id}/requests": ("app", "cloud", False),
        "app/{client_id}/responses": ("cloud", "app", False),
        "app/{client_id}/events": ("cloud", "app", False),
        "sim/{vin}/control": ("operator", "tcu", False),
        "sim/{vin}/control/results": ("tcu", "operator", False),
    }
    seen = {}
    for channel_id, channel in document["channels"].items():
        direction = channel["x-direction"]
        assert direction["qos"] == 1
        seen[channel["address"]] = (direction["from"], direction["to"], direction["retain"])
        sends = [op for op in document["operations"].values() if op["channel"]["$ref"] == f"#/channels/{channel_id}"]
        assert {op["action"] for op in sends} == {"send", "receive"}
        assert all(op["bindings"]["mqtt"] == {"qos": 1, "retain": direction["retain"], "bindingVersion": "0.2.0"}
                   for op in sends)
    assert seen == expected


def test_signed_messages_describe_their_claims_and_signing(document: dict[str, Any]) -> None:
    messages = document["components"]["messages"]
    for name, typ in (("tcuStatus", "tcu-status+jwt"), ("tcuEvents", "tcu-event+jwt"),
                      ("tcuCommands", "tcu-command+jwt"), ("tcuResults", "tcu-result+jwt")):
        message = messages[name]
        assert message["x-signing"]["protected-header"]["typ"] == typ
        assert "Ed25519" in message["x-signing"]["alg"]
        claims = message["payload"]["$ref"].rsplit("/", 1)[1]
        assert set(document["components"]["schemas"][claims]["required"]) >= {"iss", "aud", "exp", "jti", "seq", "body"}


def test_every_example_of_the_protocol_docs_validates_against_its_message_schema(document: dict[str, Any]) -> None:
    checked = 0
    for kind, name, text in blocks("json"):
        if kind not in ("model", "models"):
            continue
        assert name is not None
        data = json.loads(text)
        validator = schema_of(document, name)
        for item in data if kind == "models" else [data]:
            errors = [e.message[:200] for e in validator.iter_errors(item)]
            assert errors == [], f"{name}: {errors}"
            checked += 1
    assert checked >= 40


def test_the_documented_token_claims_validate_against_the_event_claims(document: dict[str, Any]) -> None:
    (token,) = [text.strip() for kind, _, text in blocks("text") if kind == "token"]
    assert re.fullmatch(document["components"]["messages"]["tcuEvents"]["x-signing"]["token-pattern"], token)
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert list(schema_of(document, "EventClaims").iter_errors(claims)) == []


def test_message_schemas_refuse_what_the_models_refuse(document: dict[str, Any]) -> None:
    status = schema_of(document, "StatusSnapshot")
    assert not status.is_valid({"updated_at": 1})  # fields missing
    command = schema_of(document, "Command")
    assert command.is_valid({"command_id": "c1", "op": "lock"})
    assert not command.is_valid({"command_id": "c1", "op": "self_destruct"})
    assert not command.is_valid({"command_id": "c1", "op": "lock", "extra": 1})
