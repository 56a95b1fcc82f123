"""Examples in docs/protocol.md are run as tests: every JSON block parses as the model its first line names."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import protocol_samples
import pytest
from pydantic import BaseModel

import tcu_sim.protocol as protocol
from tcu_sim.clock import VirtualClock
from tcu_sim.protocol import CLOUD, KeySet, MessageType, Verifier, parse_body

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.DOTALL | re.MULTILINE)
MARKER = re.compile(r"// (model|models|jwks|token)(?::\s*(.+))?$")


def blocks(language: str) -> list[tuple[str, str | None, str]]:
    """(kind, argument, text) of every marked block of `language`."""
    found = []
    for lang, text in BLOCK.findall(DOC.read_text(encoding="utf-8")):
        if lang != language:
            continue
        first, _, rest = text.partition("\n")
        marker = MARKER.fullmatch(first.strip())
        if marker is None:
            if language == "json":
                pytest.fail(f"docs/protocol.md: json block without a `// model: <Name>` line: {first[:60]!r}")
            continue
        found.append((marker.group(1), marker.group(2), rest))
    return found


def model_named(name: str) -> type[BaseModel]:
    model = getattr(protocol, name, None)
    assert isinstance(model, type)
    assert issubclass(model, BaseModel), f"{name} is not a model of tcu_sim.protocol"
    return model


def check(model: type[BaseModel], data: dict[str, Any]) -> None:
    parsed = parse_body(model, data)
    # the example is canonical: it is exactly what the model writes
    assert parsed.model_dump(mode="json") == data


def test_every_json_block_is_a_valid_message() -> None:
    checked = 0
    for kind, name, text in blocks("json"):
        data = json.loads(text)
        if kind == "model":
            assert name is not None
            check(model_named(name), data)
            checked += 1
        elif kind == "models":
            assert name is not None
            assert isinstance(data, list)
            assert data, "an empty example list proves nothing"
            for item in data:
                check(model_named(name), item)
                checked += 1
        elif kind == "jwks":
            assert len(KeySet.from_jwks(data)) >= 1
    assert checked >= 40


def test_examples_are_the_generated_ones() -> None:
    """The docs hold exactly what `python tests/protocol/protocol_samples.py` prints (regenerate and paste)."""
    assert protocol_samples.markdown() in DOC.read_text(encoding="utf-8")


def test_documented_token_verifies_with_the_documented_jwks() -> None:
    (jwks,) = [json.loads(text) for kind, _, text in blocks("json") if kind == "jwks"]
    (token_block,) = [(arg, text) for kind, arg, text in blocks("text") if kind == "token"]
    header, text = token_block
    assert header is not None
    match = re.fullmatch(r"(\S+) issued at (\d+)", header)
    assert match is not None, "the token block says `// token: <typ> issued at <epoch seconds>`"
    typ, issued_at = match.groups()
    verifier = Verifier(KeySet.from_jwks(jwks), audience=CLOUD, clock=VirtualClock(float(issued_at)))
    verified = verifier.verify(
        text.strip(), typ=MessageType(typ), issuer=protocol_samples.VIN, kid=protocol_samples.VIN
    )
    assert verified.seq == 42
    assert verified.body == protocol_samples.events()[0].model_dump(mode="json")


def test_every_message_model_has_an_example() -> None:
    named = {name for kind, name, _ in blocks("json") if kind in ("model", "models")}
    assert named >= {
        "StatusSnapshot",
        "Event",
        "Command",
        "CommandResult",
        "AppRequest",
        "AppResponse",
        "PushEvent",
        "ControlMessage",
    }
